/* The listener and its connections (see server.h): accept -> read -> ml_http_execute ->
 * dispatch -> ml_server_conn_done -> write. Timeouts: a request's header block must arrive within
 * header_timeout of its first byte (slowloris), a body must keep moving, and an idle
 * keep-alive connection is closed after keepalive_timeout. These timeouts count the time the
 * server could read, not the time it was stalled (see live_now). A connection is freed only
 * in the close callback of the last of its two handles. A TLS connection's bytes go through
 * its session between the socket and the parser (see "TLS" below). */
#include "server.h"
#include "access_log.h"
#include "mem.h"
#include "log.h"
#include "metrics.h"
#include "response.h"
#include "router.h"
#include "tls.h"
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <unistd.h>

#define OUT_HIGH_WATER (1u << 20)   /* stop reading while this much output is unsent */
#define LINGER_MS 2000
#define ML_LISTEN_BACKLOG 4096   /* the kernel caps it at net.core.somaxconn */
#define STALL_MS 100             /* callbacks may run this long at a stretch: not a stall */
/* A stop gives an idle keep-alive connection this long for one last request (answered with
 * Connection: close): a busy client's next request may be on its way already. */
#define DRAIN_IDLE_MS 250
/* A TLS connection gives its session's record buffers back (~33 kB) when its timer finds
 * it idle; the timer fires by this long after it went idle (see tls_idle). */
#define TLS_IDLE_MS 100
/* A silent new connection waits this long in the kernel before it is accepted (see
 * defer_accept): one SYN-ACK retransmission. */
#define DEFER_ACCEPT_S 1

static void conn_process(ml_server_conn_t *c, const char *data, size_t len);
static void conn_flush(ml_server_conn_t *c);
static void conn_close(ml_server_conn_t *c);
static void acc_record(ml_server_conn_t *c, int status, const char *detail);
static void acc_emit(ml_server_conn_t *c);
static void met_record(ml_server_conn_t *c, int series, int status);
static void met_emit(ml_server_conn_t *c);
static void client_name(ml_server_conn_t *c);
static void timer_set(ml_server_conn_t *c, uint64_t ms);
static void read_start(ml_server_conn_t *c);
static void tls_read(ml_server_conn_t *c, const char *data, size_t n);
static void tls_close_notify(ml_server_conn_t *c);

static void handle_closed_cb(uv_handle_t *h) {
  ml_server_conn_t *c = h->data;
  if (--c->handles_open > 0) return;
  if (c->upgrade) c->upgrade->on_gone(c->upgrade_arg);
  free(c->log_id);
  ml_buf_free(&c->acc_strs);
  ml_http_free(&c->http);
  ml_buf_free(&c->pending);
  ml_buf_free(&c->out);
  ml_buf_free(&c->wbuf);
  if (c->mem) ml_buf_free(&c->mem->fed);
  free(c->mem);
  ml_tls_free(c->tls);
  ml_buf_free(&c->tls_out);
  free(c);
}

static void server_unlink(ml_server_t *s, ml_server_conn_t *c) {
  ml_list_remove(&c->link);
  s->nconns--;
  if (s->cfg.metrics) ml_metrics_gauge(ML_G_CONNECTIONS, -1);
  if (s->draining && s->nconns == 0 && s->on_drained) s->on_drained(s);
}

/* A request is in flight from its dispatch to ml_server_conn_done or to its connection's close;
 * s->requests counts them for a stop that must say what it dropped. */
static void request_start(ml_server_conn_t *c) {
  c->inflight = 1;
  c->metric_series = ML_METRICS_NO_ROUTE;
  __atomic_add_fetch(&c->srv->requests, 1, __ATOMIC_RELAXED);
  if (c->srv->cfg.metrics) ml_metrics_gauge(ML_G_INFLIGHT, 1);
}

static void request_end(ml_server_conn_t *c) {
  if (!c->inflight) return;
  c->inflight = 0;
  __atomic_sub_fetch(&c->srv->requests, 1, __ATOMIC_RELAXED);
  if (c->srv->cfg.metrics) ml_metrics_gauge(ML_G_INFLIGHT, -1);
}

int ml_server_requests(const ml_server_t *s) {
  return __atomic_load_n(&s->requests, __ATOMIC_RELAXED);
}

/* Closes now. In-flight work is aborted first so nothing will touch c again. */
static void conn_close(ml_server_conn_t *c) {
  if (c->closing) return;
  if (c->acc.pending) acc_emit(c);   /* its last bytes may not have left: logged anyway */
  /* abandoned by the client (or cut by a stop): 499 as nginx logs it */
  if (c->inflight && c->srv->cfg.access_log) acc_record(c, c->upgrade ? 101 : 499, NULL);
  if (c->acc.pending) acc_emit(c);
  if (c->met.pending) met_emit(c);
  if (c->inflight && c->srv->cfg.metrics) met_record(c, c->metric_series, c->upgrade ? 101 : 499);
  if (c->met.pending) met_emit(c);
  c->closing = 1;
  c->drain_fn = NULL;   /* a waiter for the output learns of the close from the abort */
  /* an upgraded connection's owner learns it here instead (c->upgrade stays: on_gone) */
  if (c->upgrade) c->upgrade->on_close(c->upgrade_arg);
  if (c->task) {
    void *task = c->task;
    void (*task_abort)(void *) = c->task_abort;
    c->task = NULL;
    c->task_abort = NULL;
    if (task_abort) task_abort(task);   /* static files: not the app's work */
    else c->srv->abort(c->srv->ctx, task);
  }
  request_end(c);
  ml_http_drop_upload(&c->http);   /* a body cut short: its files go now */
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->io, handle_closed_cb);
  uv_close((uv_handle_t *)&c->timer, handle_closed_cb);
  server_unlink(c->srv, c);
  if (c->mem && c->mem->peer) {   /* a memory connection's peer sees its EOF */
    const ml_server_peer_t *p = c->mem->peer;
    c->mem->peer = NULL;
    p->on_close(c->mem->arg);
  }
}

/* --- the server's own stalls -----------------------------------------------------------
 * A handler that holds the loop (the seeds' /a mistake) keeps the server from reading:
 * bytes that arrived in time wait in the kernel, and when the loop comes back it runs its
 * timers before it reads. The client was not late, the server was; so connection deadlines
 * run on live time: the loop's clock minus the time the loop spent in callbacks beyond
 * STALL_MS at a stretch. The loop is sampled before each poll and after the callbacks the
 * poll woke; between two samples it was busy for the wall time minus the time libuv
 * reports it waited in the poll. */

static uint64_t live_now(const ml_server_t *s) {
  return uv_now(s->loop) - s->stalled_ms;
}

static void stall_sample(ml_server_t *s) {
  uint64_t now = uv_hrtime(), idle = uv_metrics_idle_time(s->loop);
  uint64_t wall = now - s->stall_sample_ns, waited = idle - s->stall_idle_ns;
  uint64_t busy_ns = wall > waited ? wall - waited : 0, busy_ms = busy_ns / 1000000;
  s->turn_busy_ns += busy_ns;
  s->stall_sample_ns = now;
  s->stall_idle_ns = idle;
  if (busy_ms > STALL_MS) s->stalled_ms += busy_ms - STALL_MS;
  uv_update_time(s->loop);   /* the clock and the stalls now count up to the same moment */
}

/* Before the poll: a turn of the loop is over (its busy time is the event-loop lag of
 * the metrics). */
static void stall_prepare_cb(uv_prepare_t *p) {
  ml_server_t *s = p->data;
  stall_sample(s);
  if (s->cfg.metrics) ml_metrics_loop_turn(s->turn_busy_ns);
  s->turn_busy_ns = 0;
}

static void stall_check_cb(uv_check_t *c) {
  stall_sample(c->data);
}

/* Without libuv's idle-time metric every wait would look like a stall: then deadlines
 * stay on the loop's clock. */
static void server_handle_closed_cb(uv_handle_t *h) {
  ml_server_t *s = h->data;
  if (--s->handles_open == 0 && s->on_closed) s->on_closed(s);
}

static void stall_watch_start(ml_server_t *s) {
  if (uv_loop_configure(s->loop, UV_METRICS_IDLE_TIME) < 0) return;
  uv_prepare_init(s->loop, &s->stall_prepare);
  uv_check_init(s->loop, &s->stall_check);
  s->stall_prepare.data = s->stall_check.data = s;
  uv_prepare_start(&s->stall_prepare, stall_prepare_cb);
  uv_check_start(&s->stall_check, stall_check_cb);
  uv_unref((uv_handle_t *)&s->stall_prepare);   /* they must not keep the loop alive */
  uv_unref((uv_handle_t *)&s->stall_check);
  s->stall_sample_ns = uv_hrtime();
  s->stall_idle_ns = uv_metrics_idle_time(s->loop);
  s->stall_watch = 1;
  s->handles_open += 2;
}

static void stall_watch_stop(ml_server_t *s) {
  if (!s->stall_watch) return;
  s->stall_watch = 0;
  uv_close((uv_handle_t *)&s->stall_prepare, server_handle_closed_cb);
  uv_close((uv_handle_t *)&s->stall_check, server_handle_closed_cb);
}

/* --- timeouts --------------------------------------------------------------------------
 * Timeouts are deadlines in live time: setting one only moves c->deadline, and the libuv
 * timer is re-armed only when it would fire too late. A keep-alive request therefore costs
 * no timer operation; an early wake-up, or one after a stall, re-arms for the rest (see
 * timeout_cb). The libuv timer counts loop time, which never runs slower than live time:
 * it fires by c->timer_due. An upgraded connection's owner has its wake-up (c->wake_at)
 * on the same timer, which fires by the earlier of the two. */
static void timeout_cb(uv_timer_t *t);

/* Starts the libuv timer for the earlier of the deadline and the wake-up, unless it
 * fires by then already. */
static void timer_arm(ml_server_conn_t *c, uint64_t now) {
  uint64_t due = c->deadline;
  if (c->wake_at && (!due || c->wake_at < due)) due = c->wake_at;
  if (!due || (c->timer_due && c->timer_due <= due)) return;
  c->timer_due = due;
  uv_timer_start(&c->timer, timeout_cb, due > now ? due - now : 0, 0);
}

static void timeout_cb(uv_timer_t *t) {
  ml_server_conn_t *c = t->data;
  uint64_t now = live_now(c->srv);
  c->timer_due = 0;
  if (c->wake_at && now >= c->wake_at) {
    c->wake_at = 0;
    c->upgrade->on_timer(c->upgrade_arg);
    if (c->closing) return;
  }
  if (!c->deadline || now < c->deadline) {   /* disarmed, or early: re-arm for the rest */
    if (c->tls && c->tls_ready && !c->writing) ml_tls_release(c->tls);
    timer_arm(c, now);
    return;
  }
  if (c->writing || c->direct) {   /* still sending: fine while the client takes bytes */
    size_t queued = c->writing ? uv_stream_get_write_queue_size((uv_stream_t *)&c->io.tcp) : 0;
    if (c->writing && queued < c->write_queue_seen) {
      c->write_queue_seen = queued;
      timer_set(c, c->srv->cfg.header_timeout_ms);
      return;
    }
    ml_log(ML_LOG_INFO, "closing connection: the client stopped reading its response");
  } else if (!c->lingering && c->http.in_message) {
    ml_log(ML_LOG_INFO, "closing connection: request not received in time");
  }
  conn_close(c);
}

static void timer_set(ml_server_conn_t *c, uint64_t ms) {
  uint64_t now = live_now(c->srv);
  c->deadline = now + ms;
  timer_arm(c, now);
}

static void timer_clear(ml_server_conn_t *c) {
  c->deadline = 0;
}

/* A TLS connection is idle (between requests, or waiting in flight with all written): its
 * timer fires within TLS_IDLE_MS, and timeout_cb gives the session's buffers back. A busy
 * connection finds the timer running that soon already: nothing per request. */
static void tls_idle(ml_server_conn_t *c) {
  uint64_t due = live_now(c->srv) + TLS_IDLE_MS;
  if (c->timer_due && c->timer_due <= due) return;
  c->timer_due = due;
  uv_timer_start(&c->timer, timeout_cb, TLS_IDLE_MS, 0);
}

/* Runs before the connection's memory goes, if not earlier (UV_ECANCELED at its close). */
static void shutdown_cb(uv_shutdown_t *req, int status) {
  ml_server_conn_t *c = req->data;
  free(req);
  if (status < 0) conn_close(c);
}

/* After a final response: send FIN, then read and discard what the client still sends
 * for a short while, so our response is not destroyed by a reset (lingering close). */
static void conn_linger(ml_server_conn_t *c) {
  if (c->closing || c->lingering) return;
  if (c->mem) {   /* every byte is with the peer already: nothing to protect */
    conn_close(c);
    return;
  }
  c->lingering = 1;
  if (c->tls) tls_close_notify(c);
  uv_shutdown_t *req = ml_xmalloc(sizeof *req);   /* few connections linger: not in c */
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->io.tcp, shutdown_cb) < 0) {
    free(req);
    conn_close(c);
    return;
  }
  read_start(c);   /* read_cb discards what arrives and closes at EOF */
  timer_set(c, LINGER_MS);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  ml_server_conn_t *c = h->data;
  buf->base = c->srv->readbuf;
  buf->len = sizeof c->srv->readbuf;
}

static void read_stop(ml_server_conn_t *c) {
  if (!c->read_stopped) {
    if (c->mem) uv_idle_stop(&c->io.idle);
    else uv_read_stop((uv_stream_t *)&c->io.tcp);
    c->read_stopped = 1;
  }
}

static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf);
static void fed_cb(uv_idle_t *idle);

static void read_start(ml_server_conn_t *c) {
  if (c->read_stopped && !c->closing && !c->body_held) {
    c->read_stopped = 0;
    if (!c->mem) uv_read_start((uv_stream_t *)&c->io.tcp, alloc_cb, read_cb);
    else if (c->mem->fed.len) uv_idle_start(&c->io.idle, fed_cb);
  }
}

/* n bytes received (a socket's read, a memory connection's feed). */
static void conn_read(ml_server_conn_t *c, const char *data, size_t n) {
  if (c->lingering || c->close_after_write) return;   /* discard */
  if (c->upgrade) {   /* WebSocket bytes */
    c->upgrade->on_read(c->upgrade_arg, data, n);
    conn_flush(c);
    return;
  }
  if (c->inflight || c->pending.len) {
    ml_buf_add(&c->pending, data, n);
    if (c->pending.len > c->srv->cfg.max_body + c->http.max_header) read_stop(c);
    return;
  }
  conn_process(c, data, n);
  conn_flush(c);
}

static void read_cb(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf) {
  ml_server_conn_t *c = stream->data;
  if (n == 0) return;
  if (n < 0) {   /* EOF or error: the client is gone; abandon whatever it asked for */
    conn_close(c);
    return;
  }
  if (c->tls) tls_read(c, buf->base, (size_t)n);
  else conn_read(c, buf->base, (size_t)n);
}

/* A memory connection reads what its peer fed, all of it at once (a socket's read of
 * that size would hand it over the same way). The bytes are taken out of its fed first:
 * the peer may feed more meanwhile. */
static void fed_cb(uv_idle_t *idle) {
  ml_server_conn_t *c = idle->data;
  uv_idle_stop(idle);
  ml_buf_t *fed = &c->mem->fed;   /* the connection, and its mem, outlive the read */
  if (!fed->len) return;
  ml_buf_t data = *fed;
  *fed = (ml_buf_t){0};
  conn_read(c, data.data, data.len);
  if (fed->cap == 0) {   /* nothing fed meanwhile: the buffer serves the next feed */
    data.len = 0;
    *fed = data;
  } else {
    ml_buf_free(&data);
  }
}

void ml_server_conn_feed(ml_server_conn_t *c, const char *data, size_t len) {
  if (c->closing || !len) return;
  ml_buf_add(&c->mem->fed, data, len);
  if (!c->read_stopped) uv_idle_start(&c->io.idle, fed_cb);
}

void ml_server_conn_hangup(ml_server_conn_t *c) {
  c->mem->peer = NULL;
  conn_close(c);
}

/* A request refused before its dispatch: its access log line says why at its end. */
static void reply_error(ml_server_conn_t *c, int status, const char *detail) {
  c->out_base = c->sent + c->out.len + c->wplain;
  if (!c->http.in_message) c->start_ns = uv_hrtime();   /* refused at its first byte */
  ml_resp_error(&c->out, status, detail, NULL, 0, 0);
  if (c->srv->cfg.access_log) {
    if (!c->client[0]) client_name(c);
    acc_record(c, status, detail);
  }
  if (c->srv->cfg.metrics) met_record(c, ML_METRICS_NO_ROUTE, status);
  c->close_after_write = 1;
  c->body_held = 0;   /* the body is abandoned (its upload is gone): linger reads on */
  read_stop(c);
}

/* --- TLS -------------------------------------------------------------------------------
 * A TLS connection's reads go through tls_read: ciphertext in, the plaintext of all the
 * records it completes handed to conn_read at once, as a socket's read would be (so a
 * read stopped meanwhile leaves nothing behind in the session). Its writes are encrypted
 * in conn_write_out. The handshake runs under the header timeout armed at the accept. */

static void conn_flush(ml_server_conn_t *c);

/* A plain-HTTP request on the TLS port: answered in plain HTTP (the session goes), as
 * nginx does, and the connection closes. */
static void tls_plain_request(ml_server_conn_t *c) {
  ml_tls_free(c->tls);
  c->tls = NULL;
  reply_error(c, 400, "The plain HTTP request was sent to HTTPS port");
  conn_flush(c);
}

static void tls_read(ml_server_conn_t *c, const char *data, size_t n) {
  if (c->lingering || c->close_after_write) return;   /* discard, as conn_read does */
  if (!c->tls_seen) {
    c->tls_seen = 1;
    /* a TLS record starts with its type (22: handshake); a request with its method */
    if (data[0] >= 'A' && data[0] <= 'Z') {
      tls_plain_request(c);
      return;
    }
  }
  ml_tls_feed(c->tls, data, n);
  if (!c->tls_ready) {
    int rc = ml_tls_handshake(c->tls);
    if (rc < 0) {   /* its alert goes out, then the connection closes */
      ml_log(ML_LOG_DEBUG, "tls handshake with %s failed: %s", ml_server_conn_client(c),
             ml_tls_error(c->tls));
      c->close_after_write = 1;
      read_stop(c);
      conn_flush(c);
      return;
    }
    c->tls_ready = rc == 0;
    if (!c->tls_ready) {   /* its next flight goes out; more is due from the client */
      conn_flush(c);
      return;
    }
  }
  ml_buf_t *p = &c->srv->tls_plain;
  p->len = 0;
  int end = 0;
  for (;;) {
    ml_buf_reserve(p, 16384);
    int m = ml_tls_read(c->tls, p->data + p->len, p->cap - p->len);
    if (m > 0) {
      p->len += (size_t)m;
    } else {
      if (m < 0 && m != ML_TLS_CLOSED)
        ml_log(ML_LOG_DEBUG, "tls: %s from %s", ml_tls_error(c->tls), ml_server_conn_client(c));
      end = m < 0;   /* close_notify is the client's EOF; a bad record ends it too */
      break;
    }
  }
  if (p->len) conn_read(c, p->data, p->len);
  if (end) conn_close(c);   /* after what came before it, as a socket's EOF */
  else conn_flush(c);       /* what the session has to say (tickets after the handshake) */
}

/* The connection ends: close_notify before the FIN (a client reading to the end of the
 * connection can tell the end from a truncation). Best effort: the output is empty here,
 * so the socket has room for these few bytes. */
static void tls_close_notify(ml_server_conn_t *c) {
  ml_tls_shutdown(c->tls);
  c->tls_out.len = 0;
  if (!ml_tls_take(c->tls, &c->tls_out)) return;
  uv_buf_t b = uv_buf_init(c->tls_out.data, (unsigned)c->tls_out.len);
  uv_try_write((uv_stream_t *)&c->io.tcp, &b, 1);
  c->tls_out.len = 0;
}

void ml_server_conn_hold(void *conn, int on) {
  ml_server_conn_t *c = conn;
  if (on) {
    c->body_held = 1;
    read_stop(c);
    return;
  }
  c->body_held = 0;
  /* those read again when they are done; an upgraded connection reads while it writes */
  if (c->close_after_write || (c->writing && !c->upgrade)) return;
  read_start(c);
  /* the body moves again: the wait for the disk is not the client's */
  if (c->http.in_message) timer_set(c, c->srv->cfg.header_timeout_ms);
}

/* Parses and dispatches as many requests as `data` holds, in order. Stops when a request
 * goes asynchronous; the rest of the bytes wait in c->pending. */
static void conn_process(ml_server_conn_t *c, const char *data, size_t len) {
  c->in_process = 1;
  while (len > 0 && !c->closing && !c->close_after_write) {
    /* Pipelined responses pile up in c->out: past the high-water mark, hand them to the
     * kernel; if it cannot take them all, wait for the write before parsing on. */
    if (!c->inflight && c->out.len > OUT_HIGH_WATER) conn_flush(c);
    if (c->closing) break;
    if (c->inflight || c->writing) {
      ml_buf_add(&c->pending, data, len);
      if (!c->inflight) read_stop(c);   /* the client does not read its responses */
      break;
    }
    size_t used = 0;
    int rc = ml_http_execute(&c->http, data, len, &used);
    data += used;
    len -= used;
    if (c->closing) break;   /* never dispatch on a connection that is going away */
    if (rc == ML_HTTP_MORE) {
      /* A body in progress must keep moving; a header block has its own deadline. */
      if (c->http.headers_done) timer_set(c, c->srv->cfg.header_timeout_ms);
      break;
    }
    if (rc == ML_HTTP_ERROR) {
      reply_error(c, c->http.error_status, c->http.error_detail);
      break;
    }
    if (!c->writing) timer_clear(c);
    request_start(c);
    c->head = c->http.method == ML_M_HEAD;
    c->out_base = c->sent + c->out.len + c->wplain;
    /* named now, while the peer is surely there, if its access log line will be written
     * (one getpeername per connection: 10,000 of them in a burst of new connections) */
    if (!c->client[0] && c->srv->cfg.access_log && ml_log_enabled(ML_LOG_INFO))
      client_name(c);
    c->srv->dispatch(c->srv->ctx, c);
    if (c->upgrade) {   /* upgraded at once: the rest of the bytes are the new protocol's */
      if (len) c->upgrade->on_read(c->upgrade_arg, data, len);
      break;
    }
  }
  c->in_process = 0;
}

/* Called when c->pending holds bytes and nothing is in flight any more. */
static void conn_resume(ml_server_conn_t *c) {
  ml_buf_t work = c->pending;
  c->pending = (ml_buf_t){0};
  conn_process(c, work.data, work.len);
  if (c->pending.len == 0 && c->pending.cap == 0) {   /* give the buffer back for reuse */
    work.len = 0;
    c->pending = work;
  } else {
    ml_buf_free(&work);
  }
  /* bytes left waiting for a write (the client does not read its responses): conn_process
   * stopped the reads, and write_cb resumes once the write ends */
  if (!c->inflight && !c->closing && !(c->writing && c->pending.len)) read_start(c);
}

int ml_server_conn_keepalive(const ml_server_conn_t *c) {
  return c->http.keepalive && !c->srv->draining;
}

void ml_server_conn_close_after(ml_server_conn_t *c) {
  c->http.keepalive = 0;
}

void ml_server_conn_log_id(ml_server_conn_t *c, const char *id, size_t len) {
  if (len > 71) len = 71;
  c->log_id = ml_xrealloc(c->log_id, len + 1);
  memcpy(c->log_id, id, len);
  c->log_id[len] = '\0';
}

/* --- the access log ----------------------------------------------------------------------
 * A response's line is recorded when it is done and written once its last byte is (the
 * time counts the writing), or when the next response is done, or at the close. */

static void client_name(ml_server_conn_t *c) {
  struct sockaddr_storage sa;
  int len = sizeof sa;
  char ip[48];
  strcpy(c->client, "-");
  if (c->mem || uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&sa, &len) < 0) return;
  if (sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&sa;
    if (uv_ip6_name(a, ip, sizeof ip) == 0)
      snprintf(c->client, sizeof c->client, "[%s]:%d", ip, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&sa;
    if (uv_ip4_name(a, ip, sizeof ip) == 0)
      snprintf(c->client, sizeof c->client, "%s:%d", ip, ntohs(a->sin_port));
  }
}

const char *ml_server_conn_client(ml_server_conn_t *c) {
  if (!c->client[0]) client_name(c);
  return c->client;
}

static void acc_record(ml_server_conn_t *c, int status, const char *detail) {
  if (!ml_log_enabled(ML_LOG_INFO)) return;
  if (c->acc.pending) acc_emit(c);
  size_t ua_len = 0;
  const char *ua = c->http.headers_done ? ml_http_header(&c->http, "user-agent", &ua_len) : NULL;
  uint32_t url_len = c->http.url_len > 4096 ? 4096 : c->http.url_len;
  ml_buf_t *b = &c->acc_strs;
  b->len = 0;
  if (url_len) ml_buf_add(b, ml_http_url(&c->http), url_len);
  if (ua) ml_buf_add(b, ua, ua_len);
  if (c->log_id) ml_buf_addstr(b, c->log_id);
  if (detail) ml_buf_addstr(b, detail);
  c->acc.start_ns = c->start_ns;
  uint64_t end = c->sent + c->out.len + c->wplain;
  c->acc.bytes = end > c->out_base ? end - c->out_base : 0;
  c->acc.method = c->http.method_name ? c->http.method_name : "-";
  c->acc.status = status;
  c->acc.url_len = url_len;
  c->acc.ua_len = ua ? (uint32_t)ua_len : 0;
  c->acc.has_ua = ua != NULL;
  c->acc.id_len = c->log_id ? (uint32_t)strlen(c->log_id) : 0;
  c->acc.detail_len = detail ? (uint32_t)strlen(detail) : 0;
  c->acc.pending = 1;
}

static void acc_emit(ml_server_conn_t *c) {
  c->acc.pending = 0;
  const char *s = c->acc_strs.len ? c->acc_strs.data : "";
  ml_access_t r = {
      .method = c->acc.method,
      .url = s,
      .url_len = c->acc.url_len,
      .status = c->acc.status,
      .bytes = c->acc.bytes,
      .ms = (double)(uv_hrtime() - c->acc.start_ns) / 1e6,
      .client = c->client[0] ? c->client : "-",
      .ua = c->acc.has_ua ? s + c->acc.url_len : NULL,
      .ua_len = c->acc.ua_len,
      .id = c->acc.id_len ? s + c->acc.url_len + c->acc.ua_len : NULL,
      .id_len = c->acc.id_len,
      .detail = c->acc.detail_len ? s + c->acc.url_len + c->acc.ua_len + c->acc.id_len : NULL,
      .detail_len = c->acc.detail_len,
  };
  ml_access_write(c->srv->cfg.access_log, &r);
}

/* --- metrics: as the access log, a response is recorded once its last byte is written --- */

static void met_record(ml_server_conn_t *c, int series, int status) {
  if (c->met.pending) met_emit(c);
  c->met.start_ns = c->start_ns;
  c->met.series = series;
  c->met.method = c->http.method;
  c->met.status = status;
  c->met.pending = 1;
}

static void met_emit(ml_server_conn_t *c) {
  c->met.pending = 0;
  ml_metrics_request(c->met.series, c->met.method, c->met.status,
                     uv_hrtime() - c->met.start_ns);
}

void ml_server_conn_done(ml_server_conn_t *c, int status) {
  if (c->srv->cfg.metrics && c->inflight && !c->closing)
    met_record(c, c->metric_series, status);
  request_end(c);
  c->direct = 0;
  c->task = NULL;
  c->task_abort = NULL;
  if (c->srv->cfg.access_log && !c->closing) acc_record(c, status, NULL);
  if (c->log_id) {
    free(c->log_id);
    c->log_id = NULL;
  }
  if (!ml_server_conn_keepalive(c)) {
    c->close_after_write = 1;
    read_stop(c);
  }
  if (c->in_process) return;   /* conn_process goes on with the next request */
  if (c->pending.len && !c->close_after_write) conn_resume(c);
  conn_flush(c);
}

size_t ml_server_conn_unsent(const ml_server_conn_t *c) {
  return c->out.len + (c->writing ? uv_stream_get_write_queue_size((uv_stream_t *)&c->io.tcp) : 0);
}

/* Calls the drain waiter once the unsent output is low enough. */
static void drain_check(ml_server_conn_t *c) {
  if (!c->drain_fn || c->closing || ml_server_conn_unsent(c) > c->drain_low) return;
  void (*fn)(void *) = c->drain_fn;
  c->drain_fn = NULL;
  fn(c->drain_arg);
}

void ml_server_conn_on_drain(ml_server_conn_t *c, void (*fn)(void *arg), void *arg,
                             size_t low) {
  c->drain_fn = fn;
  c->drain_arg = arg;
  c->drain_low = low;
  if (fn) drain_check(c);
}

void ml_server_conn_upgrade(ml_server_conn_t *c, const ml_server_upgrade_t *u, void *arg) {
  c->upgrade = u;
  c->upgrade_arg = arg;
  c->task = NULL;
  if (c->closing) {   /* closed before the handover: on_gone follows from the close */
    u->on_close(arg);
    return;
  }
  if (!c->writing) timer_clear(c);
  if (c->pending.len) {   /* received while the handshake was answered */
    ml_buf_t early = c->pending;
    c->pending = (ml_buf_t){0};
    u->on_read(arg, early.data, early.len);
    ml_buf_free(&early);
  }
  if (c->closing) return;
  read_start(c);
  if (c->srv->draining) u->on_drain(arg);
}

void ml_server_conn_wake(ml_server_conn_t *c, int64_t ms) {
  if (c->closing) return;
  uint64_t now = live_now(c->srv);
  c->wake_at = ms < 0 ? 0 : now + (uint64_t)ms;
  timer_arm(c, now);
}

void ml_server_conn_send(ml_server_conn_t *c, const void *data, size_t len) {
  if (c->closing) return;
  ml_buf_add(&c->out, data, len);
  if (!c->in_process) conn_flush(c);   /* inside conn_process, its caller flushes */
}

int ml_server_conn_dup_fd(ml_server_conn_t *c) {
  if (c->mem || c->tls) return UV_ENOTSOCK;   /* no socket, or its bytes need encrypting */
  uv_os_fd_t fd;
  int rc = uv_fileno((uv_handle_t *)&c->io.tcp, &fd);
  if (rc < 0) return rc;
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return dup < 0 ? uv_translate_sys_error(errno) : dup;
}

void ml_server_conn_progress(ml_server_conn_t *c) {
  if (c->closing) return;
  c->direct = 1;
  timer_set(c, c->srv->cfg.header_timeout_ms);
}

/* A uv_write's end (a close cancels it: status UV_ECANCELED, before the close callback). */
static void write_cb(uv_write_t *req, int status) {
  ml_server_conn_t *c = req->data;
  free(req);
  c->writing = 0;
  if (status >= 0) c->sent += c->wplain;
  c->wplain = 0;
  c->wbuf.len = 0;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->read_stopped && !c->inflight && !c->close_after_write && c->pending.len)
    conn_resume(c);
  conn_flush(c);
}

/* Hands c->out to the kernel: uv_try_write first (no request object in the common case),
 * uv_write for the rest, with a request allocated for it (a connection that is not writing,
 * a waiting one, carries none). Under TLS the bytes written are the records of c->out, encrypted
 * as one batch, and of whatever else the session has to say (its handshake, alerts); the
 * response bytes count as sent when their records are. Then arms the timer that fits the
 * connection's state. */
static void conn_write_out(ml_server_conn_t *c) {
  if (c->closing || c->writing) return;
  if (c->out.len && c->mem) {   /* the peer takes it all, as a socket with room would */
    if (c->mem->peer) c->mem->peer->on_data(c->mem->arg, c->out.data, c->out.len);
    c->sent += c->out.len;
    c->out.len = 0;
    if (c->out.cap > 256 * 1024) ml_buf_reset(&c->out, 0);
  } else if (c->out.len || c->tls) {
    ml_buf_t *src = &c->out;
    size_t plain = c->out.len;
    if (c->tls) {
      plain = c->tls_ready ? c->out.len : 0;   /* nothing is sent before the handshake */
      if (plain && ml_tls_write(c->tls, c->out.data, plain) < 0) {
        ml_log(ML_LOG_DEBUG, "tls: %s", ml_tls_error(c->tls));
        conn_close(c);
        return;
      }
      if (plain) {
        c->out.len = 0;
        if (c->out.cap > 256 * 1024) ml_buf_reset(&c->out, 0);
      }
      ml_tls_take(c->tls, &c->tls_out);
      src = &c->tls_out;
    }
    int n = 0;
    if (src->len) {
      uv_buf_t b = uv_buf_init(src->data, (unsigned)src->len);
      n = uv_try_write((uv_stream_t *)&c->io.tcp, &b, 1);
      if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
      }
      if (n < 0) n = 0;
    }
    if ((size_t)n < src->len) {
      size_t done = c->tls ? 0 : (size_t)n;   /* records count when all of them left */
      c->sent += done;
      c->wplain = plain - done;
      ml_buf_t tmp = c->wbuf;
      c->wbuf = *src;
      *src = tmp;
      src->len = 0;
      ml_buf_consume(&c->wbuf, (size_t)n);
      uv_buf_t wb = uv_buf_init(c->wbuf.data, (unsigned)c->wbuf.len);
      uv_write_t *wreq = ml_xmalloc(sizeof *wreq);   /* write_cb frees it */
      wreq->data = c;
      if (uv_write(wreq, (uv_stream_t *)&c->io.tcp, &wb, 1, write_cb) < 0) {
        free(wreq);
        conn_close(c);
        return;
      }
      c->writing = 1;
      c->write_queue_seen = c->wbuf.len;
      /* a client that stops reading is dropped (the deadline moves while bytes leave) */
      timer_set(c, c->srv->cfg.header_timeout_ms);
      return;
    }
    c->sent += plain;
    src->len = 0;
    if (src->cap > 256 * 1024) ml_buf_reset(src, 0);
  }
  if (c->acc.pending) acc_emit(c);   /* every byte is written */
  if (c->met.pending) met_emit(c);
  if (c->close_after_write) {
    if (!c->inflight) conn_linger(c);
    return;
  }
  if (c->tls && !c->tls_ready) return;   /* the handshake's deadline (the accept's) runs */
  if (c->inflight) {   /* all written: no deadline while in flight (a response in pieces,
                        * a stream or a WebSocket, may pause), but for a body written directly */
    if (!c->direct) timer_clear(c);
    if (c->tls) tls_idle(c);
    return;
  }
  if (c->http.in_message)
    return;   /* a partial request: its header deadline (or body idle timer) is running */
  if (c->srv->draining) {
    conn_close(c);
    return;
  }
  timer_set(c, c->srv->cfg.keepalive_timeout_ms);
  if (c->tls) tls_idle(c);
}

/* conn_write_out, then the drain waiter: output a request added while the connection
 * was processing (ml_server_conn_send does not flush then) may have left at once, with no
 * write_cb to tell it. */
static void conn_flush(ml_server_conn_t *c) {
  conn_write_out(c);
  drain_check(c);
}

static void on_begin(ml_http_t *h) {
  ml_server_conn_t *c = h->owner;
  c->start_ns = uv_hrtime();
  timer_set(c, c->srv->cfg.header_timeout_ms);
}

/* The interim response goes out with the next flush, at the end of this read: the client
 * waits for it before sending the body. Never write from inside the parser: a failed
 * write would close the connection under it. */
static void on_headers(ml_http_t *h) {
  ml_server_conn_t *c = h->owner;
  if (h->expect_continue) ml_buf_add(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
}

static int on_body_head(ml_http_t *h, const char **detail) {
  ml_server_conn_t *c = h->owner;
  return c->srv->body ? c->srv->body(c->srv->ctx, c, detail) : 0;
}

/* A connection accepted with its first bytes (TCP_DEFER_ACCEPT) is read at once, not
 * after the next poll reports it: in a burst of new connections each request starts in
 * the turn its connection is accepted (measured: 10,000 concurrent /sleep?s=1 end 5 %
 * sooner, see defer_accept). Nothing there (a client silent for the defer period):
 * the poll reports its bytes as usual. */
static void read_now(ml_server_conn_t *c) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->io.tcp, &fd) < 0) return;
  ssize_t n;
  do n = read(fd, c->srv->readbuf, sizeof c->srv->readbuf);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
  /* libuv accepts every queued connection in one callback (10,000 of them in a burst):
   * the loop's clock, read before it, would make this request's deadlines and sleeps
   * count from a moment long past */
  uv_update_time(c->srv->loop);
  /* handed over as libuv's own read would be: EOF and errors close the connection */
  uv_buf_t buf = uv_buf_init(c->srv->readbuf, n > 0 ? (unsigned)n : 0);
  read_cb((uv_stream_t *)&c->io.tcp, n > 0 ? n : UV_EOF, &buf);
}

/* A new connection of s: the listener's next one, or (listener NULL) a memory
 * connection. Returns NULL if the accept failed. */
static ml_server_conn_t *conn_start(ml_server_t *s, uv_stream_t *listener) {
  ml_server_conn_t *c = ml_xcalloc(1, sizeof *c);
  c->srv = s;
  if (!listener) c->mem = ml_xcalloc(1, sizeof *c->mem);
  if (c->mem) uv_idle_init(s->loop, &c->io.idle);
  else uv_tcp_init(s->loop, &c->io.tcp);
  uv_timer_init(s->loop, &c->timer);
  c->io.tcp.data = c->timer.data = c;   /* data is every handle's first field */
  c->handles_open = 2;
  ml_list_unshift(&s->conns, &c->link);
  s->nconns++;
  if (s->cfg.metrics) ml_metrics_gauge(ML_G_CONNECTIONS, 1);
  if (listener && uv_accept(listener, (uv_stream_t *)&c->io.tcp) < 0) {
    conn_close(c);
    return NULL;
  }
  ml_http_init(&c->http, s->cfg.max_header, s->cfg.max_body, c);
  c->http.on_begin = on_begin;
  c->http.on_headers = on_headers;
  c->http.on_body_head = on_body_head;
  if (listener && s->tls && !(c->tls = ml_tls_accept(s->tls))) {
    conn_close(c);
    return NULL;
  }
  c->read_stopped = 1;
  read_start(c);
  timer_set(c, s->cfg.header_timeout_ms);
  if (listener && s->defer_accept && !c->tls) read_now(c);
  return c;
}

static void accept_cb(uv_stream_t *listener, int status) {
  ml_server_t *s = listener->data;
  if (status < 0) {   /* EMFILE: libuv sheds the connection; say why, once a second */
    uint64_t now = uv_now(s->loop);
    if (now - s->last_accept_warn >= 1000 || !s->last_accept_warn) {
      s->last_accept_warn = now;
      ml_log(ML_LOG_WARN, "accept: %s (%d connections open)%s", uv_strerror(status), s->nconns,
             status == UV_EMFILE ? ": raise the open-files limit (ulimit -n)" : "");
    }
    return;
  }
  conn_start(s, listener);
}

void ml_server_init(ml_server_t *s, uv_loop_t *loop, const ml_server_config_t *cfg) {
  s->loop = loop;
  s->cfg = *cfg;
  ml_list_init(&s->conns);
}

ml_server_conn_t *ml_server_conn_mem(ml_server_t *s, const ml_server_peer_t *p, void *arg) {
  ml_server_conn_t *c = conn_start(s, NULL);
  c->mem->peer = p;
  c->mem->arg = arg;
  return c;
}

/* TCP_DEFER_ACCEPT: the kernel queues a connection for accept when its first bytes arrive
 * (an HTTP or TLS client speaks first), so the accept finds the request there (read_now).
 * A client that stays silent is accepted anyway once the kernel's first SYN-ACK
 * retransmission is answered, about DEFER_ACCEPT_S later; its header timeout starts then.
 * Where the option is not available nothing changes: connections are read when polled. */
static void defer_accept(ml_server_t *s) {
  uv_os_fd_t fd;
  int secs = DEFER_ACCEPT_S;
  s->defer_accept = 0;
#ifdef TCP_DEFER_ACCEPT
  if (uv_fileno((uv_handle_t *)&s->listener, &fd) == 0 &&
      setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof secs) == 0)
    s->defer_accept = 1;
#else
  (void)fd;
  (void)secs;
#endif
}

int ml_server_bind(ml_server_t *s, uv_loop_t *loop, const ml_server_config_t *cfg, char *err,
                   size_t errlen) {
  ml_server_init(s, loop, cfg);
  struct sockaddr_storage addr;
  int rc = 0;
  if (cfg->listen_fd < 0) {
    rc = uv_ip4_addr(cfg->host, cfg->port, (struct sockaddr_in *)&addr);
    if (rc < 0) rc = uv_ip6_addr(cfg->host, cfg->port, (struct sockaddr_in6 *)&addr);
    if (rc < 0)
      return ml_err(err, errlen, "invalid --host address '%s' (use an IPv4 or IPv6 address)",
                    cfg->host);
  }
  uv_tcp_init(loop, &s->listener);
  s->listener.data = s;
  s->listening = 1;
  s->handles_open++;
  if (!cfg->loop_clock) stall_watch_start(s);
  if (cfg->listen_fd >= 0) {
    rc = uv_tcp_open(&s->listener, cfg->listen_fd);
    if (rc < 0) {   /* the handle never owned it */
      close(cfg->listen_fd);
      return ml_err(err, errlen, "cannot serve on descriptor %d: %s", cfg->listen_fd,
                    uv_strerror(rc));
    }
  } else {
    rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0);
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  if (rc == 0) rc = uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen);
  if (rc == 0) {
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    /* libuv defers EADDRINUSE to uv_listen (see uv_tcp_bind): the socket stays unbound */
    if (s->port == 0) rc = UV_EADDRINUSE;
  }
  if (rc < 0)
    return ml_err(err, errlen, "cannot listen on %s:%d: %s", cfg->host, cfg->port,
                  uv_strerror(rc));
  /* Responses go out at once (no Nagle delay). Set here, not per connection: Linux's
   * accepted sockets inherit TCP_NODELAY from their listener, which saves a setsockopt
   * per connection (10,000 of them in a burst of new connections). */
  uv_tcp_nodelay(&s->listener, 1);
  defer_accept(s);
  return 0;
}

int ml_server_listen(ml_server_t *s, char *err, size_t errlen) {
  int rc = uv_listen((uv_stream_t *)&s->listener, ML_LISTEN_BACKLOG, accept_cb);
  if (rc < 0)
    return ml_err(err, errlen, "cannot listen on %s:%d: %s", s->cfg.host, s->port,
                  uv_strerror(rc));
  return 0;
}

static void stop_listening(ml_server_t *s) {
  if (s->listening) {
    s->listening = 0;
    uv_close((uv_handle_t *)&s->listener, server_handle_closed_cb);
  }
}

void ml_server_drain(ml_server_t *s) {
  if (s->draining) return;
  s->draining = 1;
  stop_listening(s);
  ml_list_each(l, &s->conns) {
    ml_server_conn_t *c = ml_list_item(l, ml_server_conn_t, link);
    if (c->upgrade) {   /* a WebSocket says goodbye; it closes when that is done */
      c->upgrade->on_drain(c->upgrade_arg);
      continue;
    }
    if (c->inflight || c->writing || c->http.in_message || c->out.len) continue;
    /* Idle. Closing it now would lose a request the client sent as the stop came (it is
     * in the kernel's buffer, or on its way): a reset where an answer was due. */
    if (c->mem || c->lingering) conn_close(c);
    else timer_set(c, c->srv->cfg.keepalive_timeout_ms < DRAIN_IDLE_MS
                          ? c->srv->cfg.keepalive_timeout_ms : DRAIN_IDLE_MS);
  }
  if (s->nconns == 0 && s->on_drained) s->on_drained(s);
}

void ml_server_close_all(ml_server_t *s) {
  stop_listening(s);
  stall_watch_stop(s);
  s->on_drained = NULL;
  ml_server_conn_t *c;
  while ((c = ml_list_first(&s->conns, ml_server_conn_t, link))) conn_close(c);
  ml_server_set_tls(s, NULL);   /* the sessions still closing hold their own references */
  ml_buf_free(&s->tls_plain);
}

void ml_server_set_tls(ml_server_t *s, SSL_CTX *ctx) {
  SSL_CTX_free(s->tls);   /* NULL does nothing */
  s->tls = ctx;
}
