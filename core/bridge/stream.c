/* Responses written in pieces (see stream.h). Who calls what: runtime.lua's dispatch sees
 * a stream object among the handler's results and hands it to stream.lua, which calls
 * stream_start (the head), runs the producer with send (stream_send, once per chunk) and
 * calls stream_end; then dispatch.c finds r->stream set and ends the request without
 * building a response. A client that leaves cancels the request's task as for any request
 * (dispatch.c's ml_dispatch_abort): a producer waiting in send, or in any primitive, is
 * never resumed, and the record's release frees the stream. */
#include "stream.h"
#include "core.h"
#include "lresponse.h"
#include "mem.h"
#include "request.h"
#include "server.h"
#include <lauxlib.h>
#include <stdio.h>

/* A producer whose client reads as fast as it sends never waits for the output to drain:
 * after this many bytes without a wait, send lets the loop run once (other requests go
 * on; the watchdog sees no stall). */
#define YIELD_BYTES (1u << 20)

struct ml_stream_s {
  /* read-only after stream_start */
  ml_request_t *r;           /* the record that owns the stream */
  ml_task_t *task;           /* the request's task: the only one that may send */
  int status;
  size_t high, low;          /* send waits above high, until the unsent bytes are <= low */
  unsigned chunked : 1,      /* HTTP/1.1: chunked; else the close ends the body */
      body : 1,              /* a body follows the head (not HEAD, 204 or 304) */
      timer_on : 1;          /* the keep-alive timer is initialised (closed on free) */
  uint64_t idle_ms;          /* the keep-alive: ping goes out after this much quiet (0: never) */
  char ping[32];
  size_t ping_len;
  /* changing */
  unsigned ended : 1;        /* ml_stream_end ran */
  size_t unyielded;          /* bytes sent since the producer last let the loop run */
  uint64_t last_send;        /* loop time of the last piece (the keep-alive counts from it) */
  uv_timer_t timer;          /* the keep-alive's */
};

int ml_stream_status(const ml_stream_t *s) {
  return s->status;
}

static void stream_closed_cb(uv_handle_t *h) {
  free(h->data);
}

void ml_stream_free(ml_stream_t *s) {
  if (!s) return;
  if (s->timer_on) {
    uv_close((uv_handle_t *)&s->timer, stream_closed_cb);
    return;
  }
  free(s);
}

/* Appends one piece of the body (framed as a chunk on HTTP/1.1) and hands the output to
 * the kernel. The connection may close under it (a failed write): check r->conn after. */
static void put(ml_stream_t *s, ml_server_conn_t *c, const char *data, size_t len) {
  s->last_send = uv_now(s->task->sched->loop);
  if (!s->chunked) {
    ml_server_conn_send(c, data, len);
    return;
  }
  char line[24];
  int n = snprintf(line, sizeof line, "%zx\r\n", len);
  ml_buf_add(&c->out, line, (size_t)n);   /* ml_server_conn_send appends to c->out too */
  ml_buf_add(&c->out, data, len);
  ml_server_conn_send(c, "\r\n", 2);
}

void ml_stream_end(ml_request_t *r, int ok) {
  ml_stream_t *s = r->stream;
  if (!s || s->ended) return;
  s->ended = 1;
  if (s->timer_on) uv_timer_stop(&s->timer);
  ml_server_conn_t *c = r->conn;
  if (!c) return;
  if (!ok) {
    ml_server_conn_close_after(c);   /* no last chunk: the client sees the cut */
  } else if (s->chunked && s->body) {
    ml_server_conn_send(c, "0\r\n\r\n", 5);
  }
}

/* The keep-alive timer: a deadline idle_ms after the last send. An idle stream gets the
 * ping; one whose output is backed up is not idle, and waits a full period more. */
static void keepalive_cb(uv_timer_t *h) {
  ml_stream_t *s = h->data;
  ml_server_conn_t *c = s->r->conn;
  if (s->ended || !c) return;
  uint64_t now = uv_now(h->loop), quiet = now - s->last_send;
  if (quiet >= s->idle_ms) {
    if (ml_server_conn_unsent(c) <= s->high) put(s, c, s->ping, s->ping_len);
    else s->last_send = now;
    quiet = 0;
    if (!s->r->conn) return;
  }
  uv_timer_start(&s->timer, keepalive_cb, s->idle_ms - quiet, 0);
}

/* The record at stack slots 1 and 2 (r, gen) while its request is open, else NULL. */
static ml_request_t *open_request(lua_State *L) {
  ml_request_t *r = lua_touserdata(L, 1);
  unsigned gen = (unsigned)luaL_checknumber(L, 2);
  return r && r->gen == gen && r->conn ? r : NULL;
}

/* stream_start(r, g, status, ctype, headers, high_water, keepalive, ping) -> true when the
 * producer should run, false when not (HEAD, 204, 304, or the client has left), or nil,
 * err when the status or headers are bad (nothing was written). Writes the head: the
 * handler's headers, Content-Type ctype unless given, and the framing. keepalive: seconds
 * of quiet after which ping is sent (0: never). */
static int l_stream_start(lua_State *L) {
  ml_request_t *r = open_request(L);
  if (!r) {
    lua_pushboolean(L, 0);
    return 1;
  }
  const char *ctype = luaL_checkstring(L, 4);
  lua_Number high = luaL_checknumber(L, 6), idle = luaL_checknumber(L, 7);
  size_t ping_len;
  const char *ping = luaL_optlstring(L, 8, "", &ping_len);
  ml_stream_t probe;
  luaL_argcheck(L, ping_len < sizeof probe.ping, 8, "ping too long");
  ml_task_t *t = ml_task_current(L);
  if (t->owner != r || r->stream) return luaL_error(L, "stream_start: not the request's task");
  ml_server_conn_t *c = r->conn;
  int keepalive = ml_server_conn_keepalive(c);
  char err[256];
  /* the status at 3, headers at 5 (4, ctype, is the body's slot: not read) */
  int status = ml_lresp_head(L, 3, &c->out, ctype, &keepalive, err, sizeof err);
  if (status < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  ml_stream_t *s = ml_xcalloc(1, sizeof *s);
  s->r = r;
  s->task = t;
  s->status = status;
  s->high = high > 0 ? (size_t)high : 0;
  s->low = s->high / 2;
  s->chunked = c->http.parser.http_minor >= 1;
  s->body = !c->head && status != 204 && status != 304;
  r->stream = s;
  if (!s->chunked) keepalive = 0;
  if (s->chunked && status != 204 && status != 304)
    ml_buf_add(&c->out, "Transfer-Encoding: chunked\r\n", 28);
  if (!keepalive) {
    ml_buf_add(&c->out, "Connection: close\r\n", 19);
    ml_server_conn_close_after(c);
  }
  s->last_send = uv_now(t->sched->loop);
  ml_server_conn_send(c, "\r\n", 2);
  if (s->body && idle > 0 && ping_len > 0) {
    s->idle_ms = (uint64_t)(idle * 1000);
    if (s->idle_ms == 0) s->idle_ms = 1;
    memcpy(s->ping, ping, ping_len);
    s->ping_len = ping_len;
    uv_timer_init(t->sched->loop, &s->timer);
    s->timer.data = s;
    s->timer_on = 1;
    uv_timer_start(&s->timer, keepalive_cb, s->idle_ms, 0);
  }
  lua_pushboolean(L, s->body && r->conn);
  return 1;
}

/* The wait in send: the output drained to s->low. */
static void drained(void *arg) {
  ml_stream_t *s = arg;
  lua_pushboolean(s->task->co, 1);
  ml_task_wake(s->task, 1);
}

/* The task's cancel while send waits (the client left, or the app stops). When the client
 * left, its connection has forgotten the waiter already and r->conn is NULL. */
static void drain_cancel(ml_task_t *t) {
  ml_request_t *r = t->owner;
  if (r->conn) ml_server_conn_on_drain(r->conn, NULL, NULL, 0);
}

/* The other wait in send: one turn of the loop, on the task's own timer (free while the
 * producer is in send). */
static void turn_cb(uv_timer_t *h) {
  ml_task_t *t = h->data;
  lua_pushboolean(t->co, 1);
  ml_task_wake(t, 1);
}

static void turn_cancel(ml_task_t *t) {
  ml_task_timer_stop(t);
}

static int closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

/* stream_send(r, g, data) -> true, or nil, "closed" once the client has left or the
 * stream has ended. Sends data as one piece of the body, then waits while the unsent
 * output is above the high-water mark. Only the request's own task may call it. */
static int l_stream_send(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  ml_request_t *r = open_request(L);
  ml_stream_t *s = r ? r->stream : NULL;
  if (!s || s->ended || !s->body) return closed(L);
  ml_task_t *t = ml_task_current(L);
  if (t != s->task)
    return luaL_error(L, "send: call it from the stream's producer, not from another task "
                         "(moonlet.spawn, moonlet.gather)");
  if (len == 0) {   /* an empty chunk would end the body */
    lua_pushboolean(L, 1);
    return 1;
  }
  ml_server_conn_t *c = r->conn;
  put(s, c, data, len);
  if (!r->conn) return closed(L);
  s->unyielded += len;
  if (ml_server_conn_unsent(c) > s->high) {
    s->unyielded = 0;
    ml_server_conn_on_drain(c, drained, s, s->low);   /* low < unsent: it does not fire now */
    return ml_task_wait(L, t, drain_cancel, s);
  }
  if (s->unyielded >= YIELD_BYTES) {
    s->unyielded = 0;
    uv_timer_start(ml_task_timer(t), turn_cb, 0, 0);
    return ml_task_wait(L, t, turn_cancel, NULL);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* stream_end(r, g, ok): see ml_stream_end; nothing once the client has left. */
static int l_stream_end(lua_State *L) {
  ml_request_t *r = open_request(L);
  if (r) ml_stream_end(r, lua_toboolean(L, 3));
  return 0;
}

void ml_stream_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"stream_start", l_stream_start}, {"stream_send", l_stream_send},
      {"stream_end", l_stream_end}, {NULL, NULL}};
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}
