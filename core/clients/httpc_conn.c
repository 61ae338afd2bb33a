/* Keep-alive connections of the HTTP client (see httpc_conn.h). Idle connections keep
 * reading, unref'd (they hold no loop open): a close from the server closes them at once
 * on a running loop; on a loop that did not run meanwhile (a pool thread between jobs)
 * checkout looks at the socket itself before handing one out. A sweep timer, unref'd
 * too, closes those idle longer than ML_HTTPC_IDLE_TIMEOUT_MS. */
#include "httpc_conn.h"
#include "mem.h"
#include "metrics.h"
#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct ml_httpc_ctx_s {
  int verify;
  char *ca_file;                     /* NULL: the system CAs */
  SSL_CTX *ctx;
  ml_httpc_ctx_t *next;
};

static _Thread_local char plain_buf[16384];   /* what an idle TLS read decrypts */

static void idle_unlink(ml_httpc_conn_t *c) {
  ml_httpc_conns_t *p = c->idle_in;
  if (!p) return;
  ml_list_remove(&c->link);
  c->idle_in = NULL;
  p->nidle--;
  ml_metrics_gauge(ML_G_HTTPC_IDLE, -1);
}

/* c carries a request (1) or not any more (0), for the metrics. */
static void set_in_use(ml_httpc_conn_t *c, int on) {
  if (c->in_use == on) return;
  c->in_use = on;
  ml_metrics_gauge(ML_G_HTTPC_IN_USE, on ? 1 : -1);
}

/* --- connections --------------------------------------------------------------------- */

ml_httpc_conn_t *ml_httpc_conn_new(ml_httpc_conns_t *p, const char *key, void *req) {
  ml_httpc_conn_t *c = ml_xcalloc(1, sizeof *c);
  uv_tcp_init(p->loop, &c->tcp);
  c->tcp.data = c;
  ml_list_init(&c->link);
  c->key = ml_xstrdup(key);
  c->req = req;
  uv_tcp_nodelay(&c->tcp, 1);
  set_in_use(c, 1);
  return c;
}

static void conn_closed_cb(uv_handle_t *h) {
  ml_httpc_conn_t *c = h->data;
  ml_tls_free(c->tls);
  free(c->key);
  free(c);
}

void ml_httpc_conn_close(ml_httpc_conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  idle_unlink(c);
  set_in_use(c, 0);
  c->req = NULL;
  uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

void ml_httpc_conn_idle_read(ml_httpc_conn_t *c, ssize_t n, const uv_buf_t *buf) {
  if (n > 0 && c->tls) {
    ml_tls_feed(c->tls, buf->base, (size_t)n);
    if (ml_tls_read(c->tls, plain_buf, sizeof plain_buf) == 0) return;
  }
  ml_httpc_conn_close(c);
}

/* --- the pool ---------------------------------------------------------------------- */

static void sweep_cb(uv_timer_t *h) {
  ml_httpc_conns_t *p = h->data;
  uint64_t now = uv_now(p->loop);
  ml_httpc_conn_t *oldest;
  while ((oldest = ml_list_last(&p->idle, ml_httpc_conn_t, link)) &&
         now - oldest->idle_since >= ML_HTTPC_IDLE_TIMEOUT_MS)
    ml_httpc_conn_close(oldest);
  if (oldest)
    uv_timer_start(&p->sweep, sweep_cb, oldest->idle_since + ML_HTTPC_IDLE_TIMEOUT_MS - now, 0);
}

/* Is an idle connection still usable? The server may have closed it while the loop was
 * not running: look at the socket itself. */
static int conn_alive(ml_httpc_conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd)) return 0;
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return 0;                 /* closed by the server */
  if (n > 0) return c->tls != NULL;     /* plain: bytes nobody asked for; TLS: maybe a ticket */
  return errno == EAGAIN || errno == EWOULDBLOCK;
}

ml_httpc_conn_t *ml_httpc_conn_checkout(ml_httpc_conns_t *p, const char *key) {
  uint64_t now = uv_now(p->loop);
  ml_list_each(l, &p->idle) {
    ml_httpc_conn_t *c = ml_list_item(l, ml_httpc_conn_t, link);
    if (strcmp(c->key, key) == 0) {
      idle_unlink(c);
      if (now - c->idle_since < ML_HTTPC_IDLE_TIMEOUT_MS && conn_alive(c)) {
        uv_ref((uv_handle_t *)&c->tcp);
        set_in_use(c, 1);
        return c;
      }
      ml_httpc_conn_close(c);
    }
  }
  return NULL;
}

void ml_httpc_conn_checkin(ml_httpc_conns_t *p, ml_httpc_conn_t *c) {
  int same = 0;
  ml_list_each(l, &p->idle) {
    same += strcmp(ml_list_item(l, ml_httpc_conn_t, link)->key, c->key) == 0;
  }
  if (same >= ML_HTTPC_IDLE_PER_HOST) {
    ml_httpc_conn_close(c);
    return;
  }
  if (p->nidle >= ML_HTTPC_IDLE_TOTAL)
    ml_httpc_conn_close(ml_list_last(&p->idle, ml_httpc_conn_t, link));
  c->req = NULL;
  set_in_use(c, 0);
  c->idle_in = p;
  c->idle_since = uv_now(p->loop);
  ml_list_unshift(&p->idle, &c->link);
  p->nidle++;
  ml_metrics_gauge(ML_G_HTTPC_IDLE, 1);
  uv_unref((uv_handle_t *)&c->tcp);   /* an idle connection keeps no loop running */
  if (!uv_is_active((uv_handle_t *)&p->sweep))
    uv_timer_start(&p->sweep, sweep_cb, ML_HTTPC_IDLE_TIMEOUT_MS, 0);
}

SSL_CTX *ml_httpc_conn_tls_ctx(ml_httpc_conns_t *p, int verify, const char *ca_file, char *err,
                          size_t errlen) {
  for (ml_httpc_ctx_t *x = p->ctxs; x; x = x->next) {
    if (x->verify != verify) continue;
    if ((x->ca_file == NULL) != (ca_file == NULL)) continue;
    if (ca_file && strcmp(x->ca_file, ca_file) != 0) continue;
    return x->ctx;
  }
  SSL_CTX *ctx = ml_tls_ctx_new(verify, ca_file, err, errlen);
  if (!ctx) return NULL;
  ml_httpc_ctx_t *x = ml_xcalloc(1, sizeof *x);
  x->verify = verify;
  x->ca_file = ca_file ? ml_xstrdup(ca_file) : NULL;
  x->ctx = ctx;
  x->next = p->ctxs;
  p->ctxs = x;
  return ctx;
}

static void conns_closed_cb(uv_handle_t *h) {
  free(h->data);
}

static const char conns_key = 'h';   /* registry[&conns_key] = lightuserdata ml_httpc_conns_t* */

/* The scheduler is closing (its waiting tasks were cancelled, so no connection is busy):
 * close the idle connections and let the pool go. */
static void conns_close(ml_sched_t *s, void *data) {
  (void)s;
  ml_httpc_conns_t *p = data;
  lua_pushlightuserdata(p->L, (void *)&conns_key);
  lua_pushnil(p->L);
  lua_rawset(p->L, LUA_REGISTRYINDEX);
  ml_httpc_conn_t *c;
  while ((c = ml_list_first(&p->idle, ml_httpc_conn_t, link))) ml_httpc_conn_close(c);
  while (p->ctxs) {
    ml_httpc_ctx_t *x = p->ctxs;
    p->ctxs = x->next;
    SSL_CTX_free(x->ctx);   /* connections still closing hold their own reference */
    free(x->ca_file);
    free(x);
  }
  uv_close((uv_handle_t *)&p->sweep, conns_closed_cb);
}

ml_httpc_conns_t *ml_httpc_conns_of(lua_State *L, ml_sched_t *s) {
  lua_pushlightuserdata(L, (void *)&conns_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  ml_httpc_conns_t *p = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (p) return p;
  p = ml_xcalloc(1, sizeof *p);
  p->loop = s->loop;
  p->L = s->L;
  ml_list_init(&p->idle);
  uv_timer_init(s->loop, &p->sweep);
  p->sweep.data = p;
  uv_unref((uv_handle_t *)&p->sweep);
  p->on_close.fn = conns_close;
  p->on_close.data = p;
  ml_sched_on_close(s, &p->on_close);
  lua_pushlightuserdata(L, (void *)&conns_key);
  lua_pushlightuserdata(L, p);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return p;
}
