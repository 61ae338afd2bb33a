/* The /metrics listener (ml_metrics_serve): moonlet's own HTTP engine (server.h) with a
 * dispatch function of its own, so keep-alive, timeouts, 400 for what does not parse and
 * the graceful close are the app server's. It records nothing into the metrics itself: a
 * scrape is not the app's traffic. One listener a process (the host's, or the
 * supervisor's). */
#include "metrics_region.h"
#include "err.h"
#include "log.h"
#include "mem.h"
#include "response.h"
#include "router.h"
#include "server.h"
#include <string.h>

static ml_server_t *server;   /* NULL: not serving */

static void serve_closed_cb(ml_server_t *s) {
  free(s);
}

/* GET (or HEAD) /metrics, with or without a query: the page; anything else 404 or 405. */
static void serve_dispatch(void *ctx, ml_server_conn_t *c) {
  (void)ctx;
  const char *url = ml_http_url(&c->http);   /* url_len bytes, no NUL after them */
  const char *q = memchr(url, '?', c->http.url_len);
  size_t plen = q ? (size_t)(q - url) : c->http.url_len;
  int keepalive = ml_server_conn_keepalive(c);
  int status = 200;
  if (plen != 8 || memcmp(url, "/metrics", 8) != 0) {
    status = 404;
    ml_resp_error(&c->out, 404, "Not Found", NULL, keepalive, c->head);
  } else if (c->http.method != ML_M_GET && c->http.method != ML_M_HEAD) {
    status = 405;
    ml_resp_error(&c->out, 405, "Method Not Allowed", "GET, HEAD", keepalive, c->head);
  } else {
    ml_buf_t body = {0};
    ml_metrics_render(&body);
    static const char ctype[] = "text/plain; version=0.0.4; charset=utf-8";
    ml_resp_begin(&c->out, 200);
    ml_resp_header(&c->out, "Content-Type", 12, ctype, sizeof ctype - 1);
    ml_resp_end(&c->out, 200, body.len, keepalive);
    if (!c->head) ml_buf_add(&c->out, body.data, body.len);
    ml_buf_free(&body);
  }
  ml_server_conn_done(c, status);
}

/* never called: no request of this server has a task */
static void serve_abort(void *ctx, void *task) {
  (void)ctx;
  (void)task;
}

int ml_metrics_serve(uv_loop_t *loop, const char *host, int port, char *err, size_t errlen) {
  char e[512];
  if (server) return ml_err(err, errlen, "metrics: this process serves them already");
  if (!ml_metrics_region())
    return ml_err(err, errlen, "metrics: no region (ml_metrics_region_create)");
  ml_server_t *s = ml_xcalloc(1, sizeof *s);
  s->dispatch = serve_dispatch;
  s->abort = serve_abort;
  ml_server_config_t sc = {
      .host = host,
      .port = port,
      .max_body = 4096,
      .max_header = 16 << 10,
      .header_timeout_ms = 10000,
      .keepalive_timeout_ms = 30000,   /* Prometheus keeps its connection between scrapes */
      .loop_clock = 1,
      .listen_fd = -1,   /* bind host:port */
  };
  if (ml_server_bind(s, loop, &sc, e, sizeof e) || ml_server_listen(s, e, sizeof e)) {
    if (s->handles_open) {
      s->on_closed = serve_closed_cb;
      ml_server_close_all(s);
    } else {
      free(s);
    }
    return ml_err(err, errlen, "metrics (--metrics-port): %s", e);
  }
  server = s;
  int v6 = strchr(host, ':') != NULL;
  ml_log(ML_LOG_INFO, "metrics on http://%s%s%s:%d/metrics", v6 ? "[" : "", host,
         v6 ? "]" : "", s->port);
  return 0;
}

int ml_metrics_port(void) {
  return server ? server->port : -1;
}

void ml_metrics_serve_close(void) {
  ml_server_t *s = server;
  if (!s) return;
  server = NULL;
  s->on_closed = serve_closed_cb;
  ml_server_close_all(s);
  if (!s->handles_open) free(s);
}
