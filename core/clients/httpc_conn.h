/* The HTTP client's connections and their keep-alive pool (see httpc.h for the client).
 * A connection is a libuv TCP handle, with a TLS session for https, owned by one request
 * while busy (c->req) and by the pool while idle. Idle connections are kept per key
 * ("http://host:port", "https://host:port" plus the trust settings): at most
 * ML_HTTPC_IDLE_PER_HOST per key and ML_HTTPC_IDLE_TOTAL in all, each for
 * ML_HTTPC_IDLE_TIMEOUT_MS. One pool per scheduler (Lua state + loop), never shared
 * between threads; ml_sched_close closes it. */
#ifndef ML_HTTPC_CONN_H
#define ML_HTTPC_CONN_H
#include "list.h"
#include "sched.h"
#include "tls.h"
#include <lua.h>
#include <stdint.h>
#include <uv.h>

#define ML_HTTPC_IDLE_PER_HOST 64
#define ML_HTTPC_IDLE_TOTAL 256
#define ML_HTTPC_IDLE_TIMEOUT_MS 4000   /* below the usual 5 s of servers (moonlet's too) */

typedef struct ml_httpc_conns_s ml_httpc_conns_t;
typedef struct ml_httpc_conn_s ml_httpc_conn_t;
typedef struct ml_httpc_ctx_s ml_httpc_ctx_t;

struct ml_httpc_conns_s {
  uv_loop_t *loop;
  lua_State *L;                      /* the state's main thread */
  ml_sched_hook_t on_close;          /* the scheduler closes: so does the pool */
  uv_timer_t sweep;                  /* closes expired idle connections; unref'd */
  ml_list_t idle;                    /* of ml_httpc_conn_t, most recently used first */
  int nidle;
  ml_httpc_ctx_t *ctxs;              /* TLS contexts, one per trust setting */
};

struct ml_httpc_conn_s {
  uv_tcp_t tcp;
  uv_connect_t connect;
  ml_tls_t *tls;                     /* https only */
  ml_httpc_conns_t *idle_in;          /* while idle: the set it waits in */
  void *req;                         /* while busy: the request (httpc.c) */
  char *key;                         /* what may reuse it */
  uint64_t idle_since;
  ml_list_t link;                    /* in the pool's idle list */
  int ready;                         /* connected (and TLS handshake done) */
  int closing;
  int in_use;                        /* counted in the metrics' in-use gauge */
};

/* The pool of L's state, made on first use on the scheduler's loop. */
ml_httpc_conns_t *ml_httpc_conns_of(lua_State *L, ml_sched_t *s);

/* A new connection (an initialised TCP handle, not connected) for key, busy with req. */
ml_httpc_conn_t *ml_httpc_conn_new(ml_httpc_conns_t *p, const char *key, void *req);
/* Closes c for good (out of the pool too). Its pending connect and writes end with
 * UV_ECANCELED, then its memory goes in the close callback. Safe to call twice. */
void ml_httpc_conn_close(ml_httpc_conn_t *c);

/* An idle connection for key that still looks open, taken out of the pool; or NULL. */
ml_httpc_conn_t *ml_httpc_conn_checkout(ml_httpc_conns_t *p, const char *key);
/* Keeps c (its response is complete) for reuse, or closes it when the pool is full. */
void ml_httpc_conn_checkin(ml_httpc_conns_t *p, ml_httpc_conn_t *c);
/* What the read callback does with an idle connection's read: a close, or bytes nobody
 * asked for, close it; a TLS session ticket is fine. */
void ml_httpc_conn_idle_read(ml_httpc_conn_t *c, ssize_t n, const uv_buf_t *buf);

/* The TLS context for a trust setting, made on first use. NULL with a message in err when
 * ca_file cannot be loaded. The pool owns it. */
SSL_CTX *ml_httpc_conn_tls_ctx(ml_httpc_conns_t *p, int verify, const char *ca_file, char *err,
                          size_t errlen);
#endif
