/* Connections and the listener (server.c). A connection reads, feeds the parser, hands
 * each complete request to the host's dispatch function, and writes responses in order:
 * one request in flight at a time, pipelined bytes kept until it is done, all responses
 * that are ready written with one write. A server with a TLS context (ml_server_set_tls)
 * serves HTTPS: its connections' bytes go through a TLS session on the way in and out. */
#ifndef ML_SERVER_H
#define ML_SERVER_H
#include "buf.h"
#include "err.h"
#include "http.h"
#include "list.h"
#include <stdint.h>
#include <uv.h>

struct ssl_ctx_st;           /* OpenSSL's SSL_CTX */
typedef struct ml_tls_s ml_tls_t;
typedef struct ml_server_s ml_server_t;
typedef struct ml_server_conn_s ml_server_conn_t;

/* Called for each complete request. The callee writes the response into c->out and calls
 * ml_server_conn_done, now or later; while it is pending it sets c->task. */
typedef void (*ml_dispatch_fn)(void *ctx, ml_server_conn_t *c);
/* Called when a connection closes while c->task is set: cancel it, touch c no more. */
typedef void (*ml_abort_fn)(void *ctx, void *task);
/* Called when a request's header block is complete and a body follows, before any of the
 * body is read (before the Content-Length check and 100 Continue): the callee may set this
 * request's body limit (c->http.max_body) and give the body to an upload (c->http.upload,
 * with ml_server_conn_hold as its hold function). Returns 0, or an HTTP status refusing
 * the request, with a static *detail; the connection then closes. NULL: bodies are kept
 * whole under the server's limit. */
typedef int (*ml_body_fn)(void *ctx, ml_server_conn_t *c, const char **detail);
/* An upgraded connection's new owner (see ml_server_conn_upgrade). */
typedef struct {
  /* bytes received: the new protocol's, never parsed as HTTP */
  void (*on_read)(void *arg, const char *data, size_t len);
  /* the connection closes now (from inside whatever closed it): touch it no more */
  void (*on_close)(void *arg);
  /* the server drains (a graceful stop): time to say goodbye */
  void (*on_drain)(void *arg);
  /* the wake-up asked for with ml_server_conn_wake is due (a loop callback) */
  void (*on_timer)(void *arg);
  /* the connection's memory is gone, after on_close (a loop callback): the last call */
  void (*on_gone)(void *arg);
} ml_server_upgrade_t;

/* The other end of a connection without a socket (ml_server_conn_mem): the in-process
 * test client. */
typedef struct {
  /* the server's output, every byte in order, as the kernel would have taken it */
  void (*on_data)(void *arg, const char *data, size_t len);
  /* the server closed the connection (after the last on_data): touch it no more */
  void (*on_close)(void *arg);
} ml_server_peer_t;

/* A memory connection's peer (NULL once it hung up) and the bytes it fed that the server
 * has not read yet. */
typedef struct ml_server_mem_s {
  const ml_server_peer_t *peer;
  void *arg;
  ml_buf_t fed;
} ml_server_mem_t;

struct ml_server_conn_s {
  union {
    uv_tcp_t tcp;            /* a socket's connection */
    uv_idle_t idle;          /* a memory connection's: hands fed bytes to the parser */
  } io;
  uv_timer_t timer;          /* header, body-idle, keep-alive and linger timeouts; an
                              * upgraded connection's owner's wake-ups too */
  ml_server_t *srv;
  ml_http_t http;
  ml_buf_t pending;          /* received while a request was in flight, not parsed yet */
  ml_buf_t out;              /* responses not handed to the kernel yet */
  ml_buf_t wbuf;             /* the bytes of the uv_write in progress */
  size_t wplain;             /* of the response bytes in c->out, those the uv_write in
                              * progress carries (wbuf holds their records under TLS) */
  ml_list_t link;            /* in the server's conns */
  void *task;                /* the app's in-flight work, NULL when idle */
  void (*task_abort)(void *task);   /* when set, aborts c->task instead of the server's
                                     * abort (work that is not the app's: static files) */
  uint64_t start_ns;         /* the request's first byte read, for the access log */
  uint64_t sent;             /* bytes the kernel (or the peer) took, for the access log */
  uint64_t out_base;         /* c->sent + the unsent output when the request was dispatched:
                              * where its response starts */
  /* a response done and not all written yet: its access log line waits for the last byte
   * (the url, user agent and id are copied into acc_strs: the next request may be parsed) */
  struct {
    uint64_t start_ns, bytes;
    const char *method;
    int status;
    uint32_t url_len, ua_len, id_len, detail_len;
    unsigned pending : 1, has_ua : 1;
  } acc;
  ml_buf_t acc_strs;
  /* public: the current request's metrics series (metrics.h), ML_METRICS_NO_ROUTE until
   * the dispatch function names its route's */
  int metric_series;
  struct {                   /* a response done, recorded once its last byte is written */
    uint64_t start_ns;
    int series, method, status;
    unsigned pending : 1;
  } met;
  char client[64];           /* the peer's "address:port" for the access log, "" until asked */
  char *log_id;              /* owned: the request's id in the access log (NULL for none):
                              * see ml_server_conn_log_id */
  uint64_t deadline;         /* live time (ms) the connection times out at, 0 for none */
  uint64_t wake_at;          /* live time the upgrade's on_timer is due, 0 for none */
  uint64_t timer_due;        /* live time the libuv timer fires by, 0 if it is not running */
  size_t write_queue_seen;   /* unsent bytes at the last check: progress moves the deadline */
  int handles_open;
  unsigned inflight : 1, writing : 1, closing : 1, close_after_write : 1, lingering : 1,
      in_process : 1, read_stopped : 1, head : 1, body_held : 1,
      direct : 1;              /* the request writes its body itself (ml_server_conn_progress) */
  /* a response written in pieces (see ml_server_conn_send): who waits for the output to
   * drain below drain_low bytes */
  void (*drain_fn)(void *arg);
  void *drain_arg;
  size_t drain_low;
  /* an upgraded connection (WebSocket): who its bytes go to, NULL for HTTP */
  const ml_server_upgrade_t *upgrade;
  void *upgrade_arg;
  /* a connection without a socket (ml_server_conn_mem): its peer's side, NULL for a
   * socket's (owned; apart: 40 bytes that the connections a server holds by the thousand
   * never need) */
  struct ml_server_mem_s *mem;
  /* a TLS connection's session (NULL for plain HTTP), its records not written yet, and
   * where its handshake is: the first byte seen, done */
  ml_tls_t *tls;
  ml_buf_t tls_out;
  unsigned tls_seen : 1, tls_ready : 1;
};

typedef struct {
  const char *host;
  int port;
  size_t max_body;
  size_t max_header;
  uint64_t header_timeout_ms;
  uint64_t keepalive_timeout_ms;
  size_t ws_max_message;     /* a WebSocket message's limit (--ws-max-message) -> 1009 */
  int access_log;            /* ML_ACCESS_* (access_log.h): 0 writes none */
  int listen_fd;             /* >= 0: serve on this bound socket (host and port unused), -1:
                              * bind host:port; ml_server_bind takes it over either way */
  int metrics;               /* 1: its requests, connections and loop turns are recorded
                              * (metrics.h; nothing while metrics are off) */
  int loop_clock;            /* 1: no stall watch of its own, deadlines on the loop's clock:
                              * a side listener on a loop whose main server has one (the
                              * metrics'), which need not sample every turn twice more */
} ml_server_config_t;

struct ml_server_s {
  uv_loop_t *loop;
  uv_tcp_t listener;
  ml_server_config_t cfg;
  int port;                  /* the bound port */
  ml_list_t conns;           /* of ml_server_conn_t */
  int nconns;
  int requests;              /* in flight; atomic: ml_server_requests may be on any thread */
  int listening, draining;
  int defer_accept;          /* the listener has TCP_DEFER_ACCEPT: its connections are
                              * accepted with their first bytes (see ml_server_bind) */
  uint64_t last_accept_warn;
  /* the server's own stalls (see live_now in server.c) */
  uv_prepare_t stall_prepare;   /* samples before each poll ... */
  uv_check_t stall_check;       /* ... and after the callbacks it woke */
  uint64_t stall_sample_ns;     /* uv_hrtime() at the last sample */
  uint64_t stall_idle_ns;       /* uv_metrics_idle_time() at the last sample */
  uint64_t stalled_ms;          /* loop time lost to stalls: connection deadlines skip it */
  uint64_t turn_busy_ns;        /* the loop's busy time in this turn so far (metrics) */
  int stall_watch;              /* the two handles above are open */
  ml_dispatch_fn dispatch;
  ml_abort_fn abort;
  ml_body_fn body;
  void *ctx;
  void *data;                /* the owner's (the host's) */
  void (*on_drained)(ml_server_t *s);   /* after ml_server_drain, when the last conn closed */
  /* after ml_server_close_all, when the server's own handles are closed: only then may its
   * memory go (its connections' memory goes with their own handles) */
  void (*on_closed)(ml_server_t *s);
  int handles_open;          /* the listener and the stall handles not closed yet */
  struct ssl_ctx_st *tls;    /* owned: new connections' TLS context, NULL for plain HTTP */
  ml_buf_t tls_plain;        /* what one read decrypted, handed to the connection at once */
  char readbuf[65536];       /* shared by all connections: every read is parsed at once */
};

/* Binds the listening socket (s->port is then the bound port) without accepting: until
 * ml_server_listen, connecting is refused. A port in use is reported here. With
 * cfg->listen_fd >= 0 it binds nothing: that socket (bound, maybe listening already: a
 * supervisor's, see core/prod/) becomes the listener, and is closed with it (or here, on
 * failure). Returns 0, or -1 with a one-line message in err (see err.h). */
int ml_server_bind(ml_server_t *s, uv_loop_t *loop, const ml_server_config_t *cfg,
                   char *err, size_t errlen);
/* Prepares s for connections of its own making only (ml_server_conn_mem), without a
 * listener: the in-process test client's (test_client.c). ml_server_bind does it too. */
void ml_server_init(ml_server_t *s, uv_loop_t *loop, const ml_server_config_t *cfg);
/* --- connections without a socket (the in-process test client) ------------------------
 * A memory connection is served exactly as a socket's (parser, dispatch, timeouts,
 * pipelining, upgrades) but its bytes never reach the kernel: the peer feeds the request
 * bytes with ml_server_conn_feed (they are read from a loop callback, never inside the
 * call, as a socket's would be), and receives every byte of output through p->on_data as
 * soon as the server would have written it; p->on_close says the server closed it. A
 * memory connection has no descriptor: ml_server_conn_dup_fd says UV_ENOTSOCK, and static
 * files go through its output instead. ml_server_conn_hangup is the peer leaving (a
 * socket's EOF): the connection closes at once, without a call to p->on_close. */
ml_server_conn_t *ml_server_conn_mem(ml_server_t *s, const ml_server_peer_t *p, void *arg);
void ml_server_conn_feed(ml_server_conn_t *c, const char *data, size_t len);
void ml_server_conn_hangup(ml_server_conn_t *c);
/* Serves HTTPS from now on: connections accepted from now on are TLS sessions of ctx
 * (tls.h, ml_tls_server_ctx_new), the server owns ctx. Called again (a certificate
 * reload), the new context replaces the old one for new connections; those open keep the
 * context they were made with (OpenSSL counts its references) and are not disturbed.
 * The handshake must end within cfg.header_timeout_ms of the accept. A client that speaks
 * plain HTTP gets a plain-HTTP 400 ("The plain HTTP request was sent to HTTPS port") and
 * the connection closes. ctx NULL: plain HTTP for new connections. On the loop's thread. */
void ml_server_set_tls(ml_server_t *s, struct ssl_ctx_st *ctx);
/* 1 if c is a TLS connection (its request came over HTTPS). */
static inline int ml_server_conn_is_tls(const ml_server_conn_t *c) {
  return c->tls != NULL;
}
/* Accepts connections on the bound socket. Returns 0, or -1 with a message in err. */
int ml_server_listen(ml_server_t *s, char *err, size_t errlen);
/* Stops accepting, closes idle connections, lets in-flight requests finish. */
void ml_server_drain(ml_server_t *s);
/* Closes every connection now (in-flight work is aborted), the listener and the handles
 * that measure stalls; s->on_closed runs when these are closed (s->handles_open is 0:
 * none were open). Calling it again does nothing more. */
void ml_server_close_all(ml_server_t *s);

/* Requests dispatched and not answered yet (their connections open). Any thread. */
int ml_server_requests(const ml_server_t *s);

/* The peer's "1.2.3.4:5678" or "[::1]:5678" ("-" if unknown: a memory connection, or
 * a client gone already); asked of the kernel once per connection. */
const char *ml_server_conn_client(ml_server_conn_t *c);
/* The current request's id, added to its access log line as " id=..." (cut to 71 bytes).
 * Most requests have none: the connection keeps a copy only while one has it. */
void ml_server_conn_log_id(ml_server_conn_t *c, const char *id, size_t len);
/* An upload's hold function (upload.h), conn being the connection: while on, the body's
 * reading stops (the disk is behind). */
void ml_server_conn_hold(void *conn, int on);

/* --- responses written in pieces (streams, Server-Sent Events, files, WebSocket) ------
 * Between its dispatch and ml_server_conn_done a request may write its response a piece at
 * a time: ml_server_conn_send appends to c->out and hands what it can to the kernel at
 * once. Backpressure: ml_server_conn_unsent says how much the kernel has not taken yet; a
 * producer above its high-water mark waits with ml_server_conn_on_drain, whose fn runs
 * once when the unsent bytes fall to `low` or fewer (at once if they are already). A
 * connection that closes first never calls fn: the abort callback of its request runs
 * instead (ml_abort_fn), and the waiter must be forgotten there with
 * ml_server_conn_on_drain(c, NULL, NULL, 0). While a request is in flight no idle timeout
 * applies; a client that stops reading is still dropped once no byte has left for the
 * header timeout. */
void ml_server_conn_send(ml_server_conn_t *c, const void *data, size_t len);
size_t ml_server_conn_unsent(const ml_server_conn_t *c);
void ml_server_conn_on_drain(ml_server_conn_t *c, void (*fn)(void *arg), void *arg,
                             size_t low);

/* --- a body the caller writes to the socket itself (sendfile) ---------------------------
 * Once nothing is unsent (ml_server_conn_on_drain with low 0), a request may write the rest
 * of its response to the socket itself, through a duplicate of its descriptor:
 * ml_server_conn_dup_fd returns one (non-blocking, close-on-exec; the caller closes it) or
 * a negative libuv error (UV_ENOTSOCK for a memory connection or a TLS one, whose bytes
 * must be encrypted: write with ml_server_conn_send there). Being a duplicate, it names the same connection even after the
 * connection closed, so a threadpool thread may write to it safely. The caller waits for
 * writability itself (a uv_poll on the duplicate) and calls ml_server_conn_progress when it
 * starts and each time bytes left: a client that takes none for the header timeout is
 * dropped, as with ml_server_conn_send. */
int ml_server_conn_dup_fd(ml_server_conn_t *c);
void ml_server_conn_progress(ml_server_conn_t *c);

/* --- upgraded connections (WebSocket) ------------------------------------------------
 * After its 101 response is in c->out, the current request hands the connection to u:
 * every byte received after the request head (those already received too, passed to
 * u->on_read before this returns) goes to u->on_read; the HTTP parser, keep-alive and
 * header timeouts no longer apply (a client that stops reading is still dropped once no
 * byte has left for the header timeout). c->task is cleared: a close calls u->on_close
 * instead of the abort function, and a drain u->on_drain (at once when the server already
 * drains). The request stays in flight until ml_server_conn_done (status 101 in the access
 * log), which ends the connection: call ml_server_conn_close_after first. Reading pauses
 * with ml_server_conn_hold. The new owner has no timer of its own: it borrows the
 * connection's with ml_server_conn_wake. On a connection that is closing already,
 * u->on_close runs before this returns. After u->on_close, u->on_gone always follows
 * (from the connection's close callback). */
void ml_server_conn_upgrade(ml_server_conn_t *c, const ml_server_upgrade_t *u, void *arg);
/* An upgraded connection: u->on_timer runs once, ms from now (live time, see server.c: a
 * stall of the server's does not count), replacing the wake-up asked for before; ms < 0
 * cancels it. Never once the connection is closing. */
void ml_server_conn_wake(ml_server_conn_t *c, int64_t ms);

/* The response for the current request is in c->out (status for the access log). */
void ml_server_conn_done(ml_server_conn_t *c, int status);
/* 1 if the connection stays open after the current response. */
int ml_server_conn_keepalive(const ml_server_conn_t *c);
/* The connection closes once the current response is written, as if the request had
 * said Connection: close (a handler's own Connection: close). Before ml_server_conn_done. */
void ml_server_conn_close_after(ml_server_conn_t *c);
#endif
