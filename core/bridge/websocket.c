/* moonlet's WebSocket API in Lua (see websocket.h).
 *
 * The engine's events are of two kinds (ws_conn.h): store-only ones (a message to queue,
 * the close code, the connection lost) and wake-ups from loop callbacks, where tasks are
 * resumed. A resumed task may do anything, including ending the handler that keeps the
 * `ws` alive: the wake functions read all they need before the first resume and do not
 * touch the `ws` afterwards.
 *
 * Received messages wait in a queue here until ws:receive takes them; above QUEUE_HIGH
 * bytes the connection is not read (input backpressure) until it falls to QUEUE_LOW.
 * ws:send writes its frame at once, then waits while the unsent output is above
 * SEND_HIGH, until it falls to SEND_LOW (output backpressure, as moonlet.stream does). */
#include "websocket.h"
#include "core.h"
#include "list.h"
#include "mem.h"
#include "request.h"
#include "server.h"
#include "ws_conn.h"
#include "ws_handshake.h"
#include <lauxlib.h>

#define WS_MT "moonlet.websocket"
#define QUEUE_HIGH (64u << 10)
#define QUEUE_LOW (16u << 10)
#define SEND_HIGH (64u << 10)
#define SEND_LOW (16u << 10)

struct ml_ws_s {
  ml_ws_conn_t *conn;        /* the engine; NULL once the handler ended or it went */
  ml_request_t *req;         /* the handler's request, while the handler runs */
  ml_task_t *receiver;       /* waiting in ws:receive */
  ml_list_t senders;         /* sender_t: waiting in ws:send for the output to drain */
  ml_list_t queue;           /* msg_t: received, not taken yet */
  size_t queued;             /* their bytes */
  char *reason;              /* owned: the close reason ws:receive reports, NULL for none
                              * (an idle WebSocket keeps no room for one) */
  uint16_t code;             /* the close code ws:receive reports */
  uint8_t reason_len;        /* at most 123 */
  unsigned paused : 1;       /* the connection is not read: the queue is full */
  unsigned closing : 1;      /* the close handshake began, or the connection went */
  unsigned ok : 1;           /* the handler returned (ws_done) */
};

typedef struct {
  ml_list_t link;
  int kind;                  /* ML_WS_TEXT or ML_WS_BINARY */
  size_t len;
  char data[];
} msg_t;

typedef struct {
  ml_list_t link;
  ml_task_t *task;
} sender_t;

/* --- the queue --------------------------------------------------------------------------- */

static void queue_add(ml_ws_t *b, int kind, const char *data, size_t len) {
  msg_t *m = ml_xmalloc(sizeof *m + len);
  m->kind = kind;
  m->len = len;
  if (len) memcpy(m->data, data, len);
  ml_list_push(&b->queue, &m->link);
  b->queued += len;
  if (!b->paused && b->queued > QUEUE_HIGH && b->conn) {
    b->paused = 1;
    ml_ws_conn_pause(b->conn, 1);
  }
}

/* Pushes what ws:receive returns: the next message (data, "text" | "binary"), or nil,
 * "closed", code, reason. Returns the number of values. */
static int push_received(lua_State *L, ml_ws_t *b) {
  msg_t *m = ml_list_first(&b->queue, msg_t, link);
  if (!m) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    lua_pushinteger(L, b->closing ? b->code : 1006);
    lua_pushlstring(L, b->reason ? b->reason : "", b->reason_len);
    return 4;
  }
  ml_list_remove(&m->link);
  b->queued -= m->len;
  lua_pushlstring(L, m->data, m->len);
  if (m->kind == ML_WS_TEXT) lua_pushliteral(L, "text");
  else lua_pushliteral(L, "binary");
  free(m);
  if (b->paused && b->queued <= QUEUE_LOW) {
    b->paused = 0;
    if (b->conn) ml_ws_conn_pause(b->conn, 0);
  }
  return 2;
}

/* --- waking ------------------------------------------------------------------------------ */

/* Wakes the senders of `list` (taken out of their ws): with true, or nil, "closed". */
static void wake_senders(ml_list_t *list, int ok) {
  sender_t *s;
  while ((s = ml_list_first(list, sender_t, link))) {
    ml_list_remove(&s->link);
    ml_task_t *t = s->task;
    free(s);
    if (ok) {
      lua_pushboolean(t->co, 1);
    } else {
      lua_pushnil(t->co);
      lua_pushliteral(t->co, "closed");
    }
    ml_task_wake(t, ok ? 1 : 2);
  }
}

/* The receiver, if there is something for it, and, once closing, every sender. b is not
 * touched after the first resume (see the top comment). */
static void wake(ml_ws_t *b) {
  int closed = b->closing || !b->conn;
  ml_list_t senders;
  if (closed) ml_list_take_all(&b->senders, &senders);
  else ml_list_init(&senders);
  ml_task_t *t = b->receiver;
  if (t && (closed || !ml_list_empty(&b->queue))) {
    b->receiver = NULL;
    int n = push_received(t->co, b);
    ml_task_wake(t, n);
  }
  wake_senders(&senders, 0);
}

static void on_event(void *arg, ml_ws_event_t ev, int kind, const char *data, size_t len) {
  ml_ws_t *b = arg;
  ml_list_t senders;
  switch (ev) {
  case ML_WS_MESSAGE:
    queue_add(b, kind, data, len);
    break;
  case ML_WS_CLOSING:
    b->closing = 1;
    b->code = (uint16_t)kind;
    if (len > 123) len = 123;
    if (len) {   /* once per ws: the close begins once */
      b->reason = ml_xmalloc(len);
      memcpy(b->reason, data, len);
      b->reason_len = (uint8_t)len;
    }
    break;
  case ML_WS_LOST:   /* req reads the connection's parser: it can no longer */
    if (b->req) ml_request_end(b->req);
    break;
  case ML_WS_READY:
    wake(b);
    break;
  case ML_WS_DRAINED:
    ml_list_take_all(&b->senders, &senders);
    wake_senders(&senders, 1);
    break;
  case ML_WS_GONE:
    b->conn = NULL;
    wake(b);
    break;
  }
}

/* --- the Lua API ---------------------------------------------------------------------- */

static ml_ws_t *check_ws(lua_State *L) {
  return luaL_checkudata(L, 1, WS_MT);
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

/* Fills a list of the strings of the table at idx (nil: none), in a userdata left on the
 * stack; returns its length. The strings stay anchored by the table. */
static int string_list(lua_State *L, int idx, const char ***out) {
  if (lua_isnoneornil(L, idx)) return -1;
  luaL_checktype(L, idx, LUA_TTABLE);
  int n = (int)lua_objlen(L, idx);
  const char **list = lua_newuserdata(L, sizeof *list * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, idx, i + 1);
    list[i] = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (!list[i]) return luaL_argerror(L, idx, "expected a list of strings");
  }
  *out = list;
  return n;
}

/* ws_handshake(r, g, subprotocols, origins) -> true, subprotocol | nil, or false, status,
 * detail: the opening handshake checked (origins: nil for any Origin) */
static int l_ws_handshake(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  if (!r->conn) return luaL_error(L, "websocket: the request has no connection");
  const ml_http_t *h = &r->conn->http;
  const char *detail, **list;
  int status = ml_ws_handshake_check(h, &detail);
  int n = string_list(L, 4, &list);
  if (!status && n >= 0 && !ml_ws_handshake_origin_ok(h, list, n)) {
    status = 403;
    detail = "Origin not allowed";
  }
  if (status) {
    lua_pushboolean(L, 0);
    lua_pushinteger(L, status);
    lua_pushstring(L, detail);
    return 3;
  }
  lua_pushboolean(L, 1);
  n = string_list(L, 3, &list);
  size_t len;
  const char *proto = n > 0 ? ml_ws_handshake_protocol(h, list, n, &len) : NULL;
  if (proto) lua_pushlstring(L, proto, len);
  else lua_pushnil(L);
  return 2;
}

/* ws_accept(r, g, subprotocol, max_message, idle_timeout, close_timeout) -> ws: answers
 * 101 and hands the connection to a WebSocket engine. From the request's own task, once. */
static int l_ws_accept(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  ml_server_conn_t *c = r->conn;
  const char *proto = luaL_optstring(L, 3, NULL);
  double max = luaL_optnumber(L, 4, 0);
  ml_ws_config_t cfg = {.max_message = max > 0 ? (size_t)max : 0,
                        .idle_ms = ml_sched_check_ms(L, 5),
                        .close_ms = ml_sched_check_ms(L, 6)};
  if (!c || r->ws || c->task != ml_task_current(L))
    return luaL_error(L, "websocket: accept runs once, in the request's own task");
  if (!cfg.max_message) cfg.max_message = c->srv->cfg.ws_max_message;
  ml_ws_t *b = lua_newuserdata(L, sizeof *b);
  memset(b, 0, sizeof *b);
  ml_list_init(&b->senders);
  ml_list_init(&b->queue);
  luaL_getmetatable(L, WS_MT);
  lua_setmetatable(L, -2);
  ml_ws_handshake_response(&c->http, proto, &c->out);
  ml_server_conn_send(c, "", 0);   /* the 101 goes before any frame */
  if (r->conn) ml_request_shrink(r);   /* an idle WebSocket keeps its request at its size */
  b->req = r;
  r->ws = b;
  b->conn = ml_ws_conn_new(c, &cfg, on_event, b);
  ml_ws_conn_start(b->conn);
  return 1;
}

/* ws_receive(ws) -> data, "text" | "binary", or nil, "closed", code, reason */
static void receive_cancel(ml_task_t *t) {
  ml_ws_t *b = t->wait;
  b->receiver = NULL;
}

static int l_ws_receive(lua_State *L) {
  ml_ws_t *b = check_ws(L);
  if (!ml_list_empty(&b->queue) || b->closing || !b->conn) return push_received(L, b);
  if (b->receiver) return luaL_error(L, "ws:receive: another task is receiving on this WebSocket");
  ml_task_t *t = ml_task_current(L);
  b->receiver = t;
  return ml_task_wait(L, t, receive_cancel, b);
}

/* ws_send(ws, data, binary) -> true, or nil, "closed" */
static void send_cancel(ml_task_t *t) {
  sender_t *s = t->wait;
  ml_list_remove(&s->link);
  free(s);
}

static int l_ws_send(lua_State *L) {
  ml_ws_t *b = check_ws(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int kind = lua_toboolean(L, 3) ? ML_WS_BINARY : ML_WS_TEXT;
  if (b->closing || !b->conn || ml_ws_conn_send(b->conn, kind, data, len)) return push_closed(L);
  lua_pushboolean(L, 1);
  if (ml_ws_conn_unsent(b->conn) <= SEND_HIGH) return 1;
  ml_task_t *t = ml_task_current(L);
  if (!ml_ws_conn_wait_drain(b->conn, SEND_LOW)) return 1;
  sender_t *s = ml_xmalloc(sizeof *s);
  s->task = t;
  ml_list_push(&b->senders, &s->link);
  lua_pop(L, 1);
  return ml_task_wait(L, t, send_cancel, s);
}

/* ws_ping(ws, data) -> true, or nil, "closed" */
static int l_ws_ping(lua_State *L) {
  ml_ws_t *b = check_ws(L);
  size_t len;
  const char *data = luaL_optlstring(L, 2, "", &len);
  luaL_argcheck(L, len <= 125, 2, "a ping carries at most 125 bytes");
  if (b->closing || !b->conn || ml_ws_conn_send(b->conn, ML_WS_PING, data, len))
    return push_closed(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* 1 if a close frame may carry code (RFC 6455 7.4; 1005, 1006 and 1015 are never sent) */
static int code_ok(lua_Integer code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

/* ws_close(ws, code, reason) -> true, or nil, "closed" */
static int l_ws_close(lua_State *L) {
  ml_ws_t *b = check_ws(L);
  lua_Integer code = luaL_optinteger(L, 2, 1000);
  size_t len;
  const char *reason = luaL_optlstring(L, 3, "", &len);
  luaL_argcheck(L, code_ok(code), 2, "expected a close code: 1000-1003, 1007-1014 or 3000-4999");
  luaL_argcheck(L, len <= 123, 3, "a close reason has at most 123 bytes");
  if (b->closing || !b->conn || ml_ws_conn_close(b->conn, (int)code, reason, len))
    return push_closed(L);
  lua_pushboolean(L, 1);
  return 1;
}

/* ws_done(ws): the handler returned normally (its close is 1000, see ml_websocket_end) */
static int l_ws_done(lua_State *L) {
  check_ws(L)->ok = 1;
  return 0;
}

void ml_websocket_end(ml_ws_t *b) {
  b->req = NULL;
  if (b->conn) {
    if (!b->closing) {
      if (b->ok) ml_ws_conn_close(b->conn, 1000, "", 0);
      else ml_ws_conn_close(b->conn, 1011, "Internal Server Error", 21);
    }
    ml_ws_conn_detach(b->conn);
    b->conn = NULL;
  }
  wake(b);
}

/* A ws collected (at the latest when its Lua state closes): its queue goes, and its engine
 * must not call it any more. */
static int l_ws_gc(lua_State *L) {
  ml_ws_t *b = lua_touserdata(L, 1);
  msg_t *m;
  while ((m = ml_list_first(&b->queue, msg_t, link))) {
    ml_list_remove(&m->link);
    free(m);
  }
  if (b->conn) ml_ws_conn_detach(b->conn);
  if (b->req) b->req->ws = NULL;
  free(b->reason);
  b->reason = NULL;
  b->conn = NULL;
  b->req = NULL;
  return 0;
}

void ml_websocket_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"ws_handshake", l_ws_handshake}, {"ws_accept", l_ws_accept},
      {"ws_receive", l_ws_receive},     {"ws_send", l_ws_send},
      {"ws_ping", l_ws_ping},           {"ws_close", l_ws_close},
      {"ws_done", l_ws_done},           {NULL, NULL}};
  ml_core_class(L, WS_MT, NULL, l_ws_gc);
  luaL_register(L, NULL, fns);
}
