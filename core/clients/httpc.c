/* The HTTP client (see httpc.h). One request goes:
 *
 *   l_http_request ─ idle connection for this scheme+host+port? ─ yes ─────────────┐
 *        │ no                                                                      │
 *   uv_getaddrinfo (skipped for IP literals) → uv_tcp_connect, each address in     │
 *   turn → TLS handshake (https) ──────────────────────────────────────────────────┴→
 *   write the request → read: (decrypt) → the response reader (httpc_resp.c) → req_succeed
 *
 * Ending a request pushes (status, headers, body) or (nil, message) on its task, gives the
 * connection back to the pool (the response was complete, the server keeps the connection
 * open and nothing followed the response) or closes it, and wakes the task last: in a
 * coroutine the wake runs Lua at once, which may start the next request on that very
 * connection, so nothing is touched after it.
 *
 * Ownership. A request (hc_req_t) belongs to its task until it ends or is cancelled; its
 * memory goes when its timer has closed and no getaddrinfo is pending (refs). Its
 * connection (httpc_conn.h) is its own while busy: closed when the request fails or is
 * cancelled, handed to the pool (one per scheduler) only after a complete response.
 *
 * Time. A request has one timer set to the earliest of its deadlines: the total one, and
 * either the connect one (DNS, TCP, TLS handshake) or the read one (no byte for
 * read_timeout while sending or receiving), pushed back by every read. */
#include "httpc.h"
#include "core.h"
#include "mem.h"
#include "headers.h"
#include "buf.h"
#include "httpc_conn.h"
#include "httpc_resp.h"
#include "sched.h"
#include <assert.h>
#include <lauxlib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

typedef struct hc_req_s hc_req_t;

enum { PH_CONNECT, PH_IO };

struct hc_req_s {
  ml_task_t *task;                   /* NULL once the request is over (ended or cancelled) */
  ml_httpc_conns_t *conns;
  ml_httpc_conn_t *conn;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  int gai_pending;
  int refs;                          /* the timer, a pending getaddrinfo */
  struct sockaddr_storage *addrs;    /* to try in order */
  int naddrs, addr_i;
  /* what to send, and where */
  char *host, *key, *label;
  char where[300];                   /* "host:port" for messages */
  int port, tls, verify, head, idempotent, keepalive;
  SSL_CTX *ctx;                      /* borrowed from the pool */
  ml_buf_t wire;
  double connect_s, read_s, total_s;
  uint64_t total_deadline, phase_start;
  int phase;
  size_t max_size;
  int started;                       /* the task waits: failures are delivered at once */
  int deferred;                      /* a failure waits for the timer to deliver it */
  int reused, retried;
  ml_httpc_resp_t resp;              /* the response (httpc_resp.h) */
  char err[512];
};

static _Thread_local char read_buf[65536];   /* libuv reads land here, one read at a time */
static _Thread_local char plain_buf[16384];  /* decrypted bytes */

static void req_send(hc_req_t *r);
static void req_resolve(hc_req_t *r);
static void conn_start(hc_req_t *r);

/* --- connections: writing, reading --------------------------------------------------------------------- */

typedef struct {
  uv_write_t w;
  char data[];
} hc_write_t;

static void req_io_error(hc_req_t *r, const char *what, int status);

static void req_arm(hc_req_t *r);

/* A write ended: a failure ends the request (or retries it); a success is progress, so
 * the read timeout counts from now (a large body may take a while to go out). */
static void write_cb(uv_write_t *w, int status) {
  ml_httpc_conn_t *c = w->data;
  free(w);
  hc_req_t *r = c->req;
  if (c->closing || !r) return;
  if (status < 0) {
    req_io_error(r, "write", status);
    return;
  }
  if (r->phase == PH_IO) {
    r->phase_start = uv_now(r->conns->loop);
    req_arm(r);
  }
}

/* Writes a copy of data. Returns 0 or a libuv error (then nothing was queued). */
static int conn_write(ml_httpc_conn_t *c, const char *data, size_t len) {
  hc_write_t *w = ml_xmalloc(sizeof *w + len);
  memcpy(w->data, data, len);
  w->w.data = c;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  int rc = uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
  if (rc) free(w);
  return rc;
}

/* Sends what OpenSSL produced. Returns 0 or a libuv error. */
static int conn_flush_tls(ml_httpc_conn_t *c) {
  ml_buf_t out = {0};
  int rc = 0;
  if (ml_tls_take(c->tls, &out)) rc = conn_write(c, out.data, out.len);
  ml_buf_free(&out);
  return rc;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  buf->base = read_buf;
  buf->len = sizeof read_buf;
}

/* --- requests: ending ---------------------------------------------------------------- */

static void req_unref(hc_req_t *r) {
  if (--r->refs > 0) return;
  free(r->addrs);
  free(r->host);
  free(r->key);
  free(r->label);
  ml_buf_free(&r->wire);
  ml_httpc_resp_free(&r->resp);
  free(r);
}

/* Closes r's connection, if any: never reused after a failure or a cancel. */
static void req_drop_conn(hc_req_t *r) {
  if (!r->conn) return;
  ml_httpc_conn_close(r->conn);
  r->conn = NULL;
}

static void timer_closed_cb(uv_handle_t *h) {
  req_unref(h->data);
}

/* Lets go of everything r holds on the loop: its connection (closed), its DNS lookup
 * (cancelled), its timer. r->task must already be NULL. */
static void req_release(hc_req_t *r) {
  assert(!r->task);
  req_drop_conn(r);
  if (r->gai_pending) uv_cancel((uv_req_t *)&r->gai);
  uv_close((uv_handle_t *)&r->timer, timer_closed_cb);
}

/* Ends r with n results pushed on its task, then wakes the task: the caller's last act. */
static void req_end(hc_req_t *r, int n) {
  ml_task_t *t = r->task;
  r->task = NULL;
  req_release(r);
  ml_task_wake(t, n);
}

static void req_cancel(ml_task_t *t) {
  hc_req_t *r = t->wait;
  r->task = NULL;
  req_release(r);
}

static void timer_cb(uv_timer_t *h);

/* Ends r with nil and the message in r->err. Before the task waits, the timer delivers it
 * on the next loop turn (a task must wait before it is woken). */
static void req_fail_err(hc_req_t *r) {
  req_drop_conn(r);
  if (!r->started) {
    r->deferred = 1;
    uv_timer_start(&r->timer, timer_cb, 0, 0);
    return;
  }
  lua_State *co = r->task->co;
  lua_pushnil(co);
  lua_pushstring(co, r->err);
  req_end(r, 2);
}

/* Ends r with nil, message (printf-style). */
static void req_fail(hc_req_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof r->err, fmt, ap);
  va_end(ap);
  req_fail_err(r);
}

/* Does an https connection hold bytes beyond the response? Then it cannot be reused. */
static int tls_has_more(ml_httpc_conn_t *c) {
  char b;
  return ml_tls_read(c->tls, &b, 1) != 0;
}

/* The response is complete: status, headers, body to the task. `clean`: no byte followed
 * it in what was read. */
static void req_succeed(hc_req_t *r, int clean) {
  ml_httpc_conn_t *c = r->conn;
  int reuse = c && clean && r->keepalive && ml_httpc_resp_keepalive(&r->resp) &&
              !(c->tls && tls_has_more(c));
  lua_State *co = r->task->co;
  lua_pushinteger(co, r->resp.parser.status_code);
  ml_headers_push(co, &r->resp.headers);
  lua_pushlstring(co, r->resp.body.data ? r->resp.body.data : "", r->resp.body.len);
  if (c) {
    r->conn = NULL;
    if (reuse) ml_httpc_conn_checkin(r->conns, c);
    else ml_httpc_conn_close(c);
  }
  req_end(r, 3);
}

/* A reused connection failed before any response byte: the server had closed it. Once,
 * for idempotent methods, the request goes again on a fresh connection. */
static int req_retry(hc_req_t *r) {
  if (!r->reused || r->retried || r->resp.got_bytes || !r->idempotent) return 0;
  req_drop_conn(r);
  r->reused = 0;
  r->retried = 1;
  ml_httpc_resp_reset(&r->resp);
  req_resolve(r);
  return 1;
}

static void req_io_error(hc_req_t *r, const char *what, int status) {
  if (req_retry(r)) return;
  req_fail(r, "%s: %s (%s)", what, uv_strerror(status), r->label);
}

/* The server closed the connection (EOF, or close_notify over TLS) or it broke. */
static void req_on_close(hc_req_t *r, int status) {
  if (req_retry(r)) return;
  if (status != UV_EOF) {
    req_fail(r, "read: %s (%s)", uv_strerror(status), r->label);
    return;
  }
  if (ml_httpc_resp_eof(&r->resp) == ML_HTTPC_RESP_DONE) {
    req_succeed(r, 0);
    return;
  }
  snprintf(r->err, sizeof r->err, "%s", r->resp.err);
  req_fail_err(r);
}

/* --- requests: time ------------------------------------------------------------------ */

/* Sets the timer to the earliest deadline of the current phase. */
static void req_arm(hc_req_t *r) {
  uint64_t now = uv_now(r->conns->loop);
  double phase_s = r->phase == PH_CONNECT ? r->connect_s : r->read_s;
  uint64_t d = r->phase_start + (uint64_t)(phase_s * 1000 + 0.5);
  if (r->total_deadline < d) d = r->total_deadline;
  uv_timer_start(&r->timer, timer_cb, d > now ? d - now : 0, 0);
}

static void timer_cb(uv_timer_t *h) {
  hc_req_t *r = h->data;
  if (r->deferred) {
    r->deferred = 0;
    r->started = 1;
    req_fail_err(r);
    return;
  }
  if (uv_now(r->conns->loop) >= r->total_deadline) {
    if (r->resp.got_bytes)
      req_fail(r, "timeout: response not complete within %g s (%s)", r->total_s, r->label);
    else
      req_fail(r, "timeout: no response within %g s (%s)", r->total_s, r->label);
  } else if (r->phase == PH_CONNECT) {
    req_fail(r, "timeout: no connection within %g s (%s)", r->connect_s, r->where);
  } else if (r->resp.got_bytes) {
    req_fail(r, "timeout: no data for %g s (%s)", r->read_s, r->label);
  } else {
    req_fail(r, "timeout: no response within %g s (%s)", r->read_s, r->label);
  }
}

/* --- requests: the response ---------------------------------------------------------- */

/* Response bytes (plain text). Returns 1 when they ended the request. */
static int req_on_data(hc_req_t *r, const char *data, size_t len) {
  r->phase_start = uv_now(r->conns->loop);
  req_arm(r);
  int clean = 0;
  int rc = ml_httpc_resp_feed(&r->resp, data, len, &clean);
  if (rc == ML_HTTPC_RESP_MORE) return 0;
  if (rc == ML_HTTPC_RESP_DONE) {
    req_succeed(r, clean);
    return 1;
  }
  snprintf(r->err, sizeof r->err, "%s", r->resp.err);
  req_fail_err(r);
  return 1;
}

/* Advances the TLS handshake. Returns 1 when it ended the request. */
static int conn_handshake(ml_httpc_conn_t *c) {
  hc_req_t *r = c->req;
  int rc = ml_tls_handshake(c->tls);
  int wrc = conn_flush_tls(c);
  if (rc < 0) {
    req_fail(r, "tls: %s (%s)", ml_tls_error(c->tls), r->where);
    return 1;
  }
  if (wrc) {
    req_fail(r, "tls: %s (%s)", uv_strerror(wrc), r->where);
    return 1;
  }
  if (rc == 1) return 0;
  c->ready = 1;
  req_send(r);
  return c->req != r;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  ml_httpc_conn_t *c = s->data;
  if (n == 0 || c->closing) return;
  hc_req_t *r = c->req;
  if (!r) {
    ml_httpc_conn_idle_read(c, n, buf);
    return;
  }
  if (n < 0) {
    if (c->tls && !c->ready)
      req_fail(r, "tls: connection closed during the handshake (%s)", r->where);
    else
      req_on_close(r, (int)n);
    return;
  }
  if (!c->tls) {
    req_on_data(r, buf->base, (size_t)n);
    return;
  }
  ml_tls_feed(c->tls, buf->base, (size_t)n);
  if (!c->ready && conn_handshake(c)) return;
  if (!c->ready) return;
  for (;;) {
    int m = ml_tls_read(c->tls, plain_buf, sizeof plain_buf);
    if (m == 0) break;
    if (m == ML_TLS_CLOSED) {
      req_on_close(r, UV_EOF);
      return;
    }
    if (m < 0) {
      req_fail(r, "tls: %s (%s)", ml_tls_error(c->tls), r->label);
      return;
    }
    if (req_on_data(r, plain_buf, (size_t)m)) return;
  }
  int wrc = conn_flush_tls(c);   /* reading may answer the server (key updates) */
  if (wrc) req_io_error(r, "write", wrc);
}

/* --- requests: connecting and sending ------------------------------------------------- */

static void req_send(hc_req_t *r) {
  ml_httpc_conn_t *c = r->conn;
  r->phase = PH_IO;
  r->phase_start = uv_now(r->conns->loop);
  req_arm(r);
  int rc;
  if (c->tls) {
    rc = ml_tls_write(c->tls, r->wire.data, r->wire.len);
    if (rc) {
      req_fail(r, "tls: %s (%s)", ml_tls_error(c->tls), r->label);
      return;
    }
    rc = conn_flush_tls(c);
  } else {
    rc = conn_write(c, r->wire.data, r->wire.len);
  }
  if (rc) req_io_error(r, "write", rc);
}

static void connect_cb(uv_connect_t *cr, int status) {
  ml_httpc_conn_t *c = cr->handle->data;
  if (c->closing) return;
  hc_req_t *r = c->req;
  if (status < 0) {
    req_drop_conn(r);
    if (++r->addr_i < r->naddrs) conn_start(r);   /* the next address of the name */
    else req_fail(r, "connect: %s (%s)", uv_strerror(status), r->where);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (rc) {
    req_fail(r, "connect: %s (%s)", uv_strerror(rc), r->where);
    return;
  }
  if (!r->tls) {
    c->ready = 1;
    req_send(r);
    return;
  }
  c->tls = ml_tls_new(r->ctx, r->host, r->verify);
  if (!c->tls) {
    req_fail(r, "tls: cannot create a session (%s)", r->where);
    return;
  }
  conn_handshake(c);
}

/* Connects to r->addrs[r->addr_i]; failures move on to the next address. */
static void conn_start(hc_req_t *r) {
  ml_httpc_conn_t *c = ml_httpc_conn_new(r->conns, r->key, r);
  r->conn = c;
  int rc = uv_tcp_connect(&c->connect, &c->tcp,
                          (const struct sockaddr *)&r->addrs[r->addr_i], connect_cb);
  if (rc == 0) return;
  req_drop_conn(r);
  if (++r->addr_i < r->naddrs) conn_start(r);
  else req_fail(r, "connect: %s (%s)", uv_strerror(rc), r->where);
}

static void gai_cb(uv_getaddrinfo_t *g, int status, struct addrinfo *res) {
  hc_req_t *r = g->data;
  r->gai_pending = 0;
  if (!r->task) {   /* cancelled meanwhile */
    uv_freeaddrinfo(res);
    req_unref(r);
    return;
  }
  r->refs--;
  if (status < 0) {
    uv_freeaddrinfo(res);
    req_fail(r, "dns: %s (%s)", uv_strerror(status), r->host);
    return;
  }
  int n = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6) n++;
  free(r->addrs);
  r->addrs = ml_xcalloc((size_t)n + 1, sizeof *r->addrs);
  r->naddrs = 0;
  for (struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
      memcpy(&r->addrs[r->naddrs++], a->ai_addr, a->ai_addrlen);
  uv_freeaddrinfo(res);
  if (r->naddrs == 0) {
    req_fail(r, "dns: no address (%s)", r->host);
    return;
  }
  r->addr_i = 0;
  conn_start(r);
}

/* Starts a fresh connection: the address at once for an IP literal, else through DNS. */
static void req_resolve(hc_req_t *r) {
  r->phase = PH_CONNECT;
  r->phase_start = uv_now(r->conns->loop);
  req_arm(r);
  free(r->addrs);
  r->addrs = ml_xcalloc(1, sizeof *r->addrs);
  r->naddrs = 1;
  r->addr_i = 0;
  if (uv_ip4_addr(r->host, r->port, (struct sockaddr_in *)r->addrs) == 0 ||
      uv_ip6_addr(r->host, r->port, (struct sockaddr_in6 *)r->addrs) == 0) {
    conn_start(r);
    return;
  }
  char port[8];
  snprintf(port, sizeof port, "%d", r->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  r->gai.data = r;
  int rc = uv_getaddrinfo(r->conns->loop, &r->gai, gai_cb, r->host, port, &hints);
  if (rc) {
    req_fail(r, "dns: %s (%s)", uv_strerror(rc), r->host);
    return;
  }
  r->gai_pending = 1;
  r->refs++;
}

/* --- Lua --------------------------------------------------------------------------------- */

static const char *opt_str(lua_State *L, const char *name, size_t *len, int required) {
  lua_getfield(L, 1, name);
  int ty = lua_type(L, -1);
  if (ty != LUA_TSTRING && (required || ty != LUA_TNIL))
    luaL_error(L, "http_request: field '%s' must be a string", name);
  const char *s = lua_tolstring(L, -1, len);
  lua_pop(L, 1);   /* the table at index 1 keeps the string alive */
  return s;
}

static double opt_num(lua_State *L, const char *name, double def, double min) {
  lua_getfield(L, 1, name);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (lua_type(L, -1) != LUA_TNUMBER)
      luaL_error(L, "http_request: field '%s' must be a number", name);
    v = lua_tonumber(L, -1);
    if (!(v >= min && v < 1e9)) luaL_error(L, "http_request: field '%s' is out of range", name);
  }
  lua_pop(L, 1);
  return v;
}

static int opt_bool(lua_State *L, const char *name, int def) {
  lua_getfield(L, 1, name);
  int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* http_request(spec) -> status, headers, body | nil, message (see httpc.h). Misuse raises
 * before anything is allocated; every other failure comes back as nil, message. */
static int l_http_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  ml_task_t *t = ml_task_current(L);   /* raises outside a moonlet state */
  size_t wlen;
  const char *host = opt_str(L, "host", NULL, 1);
  const char *wire = opt_str(L, "wire", &wlen, 1);
  const char *label = opt_str(L, "label", NULL, 1);
  const char *ca_file = opt_str(L, "ca_file", NULL, 0);
  double port = opt_num(L, "port", 0, 1);
  double connect_s = opt_num(L, "connect_timeout", 10, 0);
  double read_s = opt_num(L, "read_timeout", 30, 0);
  double total_s = opt_num(L, "timeout", 60, 0);
  double max_size = opt_num(L, "max_size", 16 << 20, 0);
  luaL_argcheck(L, port <= 65535 && port == (int)port, 1, "port out of range");
  hc_req_t *r = ml_xcalloc(1, sizeof *r);
  r->tls = opt_bool(L, "tls", 0);
  r->verify = opt_bool(L, "verify", 1);
  r->head = opt_bool(L, "head", 0);
  r->idempotent = opt_bool(L, "idempotent", 0);
  r->keepalive = opt_bool(L, "keepalive", 1);
  r->connect_s = connect_s;
  r->read_s = read_s;
  r->total_s = total_s;
  r->max_size = (size_t)max_size;
  r->port = (int)port;
  r->host = ml_xstrdup(host);
  r->label = ml_xstrdup(label);
  ml_buf_add(&r->wire, wire, wlen);
  if (strchr(host, ':')) snprintf(r->where, sizeof r->where, "[%s]:%d", host, r->port);
  else snprintf(r->where, sizeof r->where, "%s:%d", host, r->port);
  ml_buf_t key = {0};   /* what a reused connection must match: scheme, host, port, trust */
  ml_buf_addstr(&key, r->tls ? "https://" : "http://");
  ml_buf_addstr(&key, r->where);
  if (r->tls) {
    ml_buf_addstr(&key, r->verify ? " verify " : " noverify ");
    if (ca_file && r->verify) ml_buf_addstr(&key, ca_file);
  }
  ml_buf_addc(&key, 0);
  r->key = key.data;
  ml_httpc_resp_init(&r->resp, r->head, r->max_size, r->label);
  ml_sched_t *s = t->sched;
  r->conns = ml_httpc_conns_of(L, s);
  r->task = t;
  r->refs = 1;
  uv_timer_init(s->loop, &r->timer);
  r->timer.data = r;
  uv_update_time(s->loop);   /* a pool thread's loop may have slept since its last turn */
  r->total_deadline = uv_now(s->loop) + (uint64_t)(r->total_s * 1000 + 0.5);
  char err[300];
  if (r->tls && !(r->ctx = ml_httpc_conn_tls_ctx(r->conns, r->verify,
                                                  r->verify ? ca_file : NULL, err, sizeof err))) {
    req_fail(r, "tls: %s", err);
  } else if ((r->conn = ml_httpc_conn_checkout(r->conns, r->key))) {
    r->conn->req = r;
    r->reused = 1;
    req_send(r);
  } else {
    req_resolve(r);
  }
  r->started = !r->deferred;
  return ml_task_wait(L, t, req_cancel, r);
}

void ml_httpc_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"http_request", l_http_request}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
