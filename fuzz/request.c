/* The request path in-process, without sockets: bytes in through the HTTP parser
 * (server.c, http.c, llhttp), the router, the runtime and a Lua handler (fuzz/app: a
 * coroutine route, a pooled one, validation, bodies, a stream, errors, middleware) and the
 * response writer, and bytes out, on a memory connection (ml_server_conn_mem) served by a
 * real ml_server_t on a libuv loop, as the in-process test client does.
 *
 * One input is one connection. The bytes "\xff\xfe" cut it into reads: each piece is fed,
 * then the loop runs until the server has nothing left to do with it (the requests it
 * completed are answered: pipelining, pooled requests in flight, streams); then the peer
 * hangs up (whatever is still in flight is aborted). The output must read as HTTP/1.1
 * responses (llhttp), unless the input holds a HEAD request (whose responses announce a
 * body they do not have). A request that never ends is a hang: libFuzzer's -timeout.
 *
 * FUZZ_APP names the app directory (fuzz/app from the repository's top); FUZZ_LOG=1 shows
 * the server's log and the output. */
/* FUZZ_NO_LEAKS: a Lua state (scripts/fuzz.sh) */
#define _GNU_SOURCE   /* memmem */
#include "fuzz.h"
#include "peer.h"
#include "app.h"
#include "dispatch.h"
#include "log.h"
#include "server.h"
#include "workers.h"
#include <llhttp.h>
#include <string.h>

static uv_loop_t loop;
static ml_server_t srv;
static ml_app_t *app;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *dir = getenv("FUZZ_APP") ? getenv("FUZZ_APP") : "fuzz/app";
  const char *log = getenv("FUZZ_LOG");
  ml_log_configure(log && *log == '1' ? ML_LOG_DEBUG : ML_LOG_ERROR + 1, NULL, NULL);
  uv_loop_init(&loop);
  char err[1024];
  app = ml_app_new(&loop, dir, 0, NULL, err, sizeof err);
  FUZZ_CHECK(app != NULL, "%s (run from the repository's top, or set FUZZ_APP)", err);
  app->sched.workers = ml_workers_new(&loop, dir, NULL, 2, 64, ML_WORKERS_POOL);
  app->sched.executor = ml_workers_new(&loop, dir, NULL, 2, 64, ML_WORKERS_EXECUTOR);
  ml_server_config_t cfg = {
      .host = "127.0.0.1",
      .max_body = 64 << 10,
      .max_header = 8 << 10,
      .header_timeout_ms = 3600 * 1000,   /* a partial request waits for the next piece */
      .keepalive_timeout_ms = 3600 * 1000,
      .ws_max_message = 64 << 10,
  };
  ml_server_init(&srv, &loop, &cfg);
  srv.dispatch = ml_dispatch;
  srv.abort = ml_dispatch_abort;
  srv.body = ml_dispatch_body;
  srv.ctx = app;
  return 0;
}

/* Runs the loop until c is closed or waits for bytes with nothing in flight. */
static void settle(ml_server_conn_t *c, fuzz_peer_t *p) {
  while (!p->closed && (c->inflight || (c->mem && c->mem->fed.len) || c->pending.len))
    uv_run(&loop, UV_RUN_ONCE);
}

/* --- the output read back ------------------------------------------------------------ */

static int on_message_complete(llhttp_t *h) {
  (*(int *)h->data)++;
  return 0;
}

/* Checks that out is a sequence of HTTP/1.1 responses (the last one may end at the
 * close). Returns how many complete responses it holds. */
static int check_output(const ml_buf_t *out, int closed) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_complete = on_message_complete;
  llhttp_t h;
  llhttp_init(&h, HTTP_RESPONSE, &s);
  int n = 0;
  h.data = &n;
  llhttp_errno_t e = out->len ? llhttp_execute(&h, out->data, out->len) : HPE_OK;
  if (e == HPE_OK && closed) e = llhttp_finish(&h);
  FUZZ_CHECK(e == HPE_OK, "the output is not HTTP: %s at byte %zu of %zu: %.*s",
             llhttp_get_error_reason(&h),
             (size_t)(llhttp_get_error_pos(&h) - out->data), out->len,
             (int)(out->len > 2000 ? 2000 : out->len), out->data);
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data, *end = p + size;
  fuzz_peer_t st = {0};
  ml_server_conn_t *c = ml_server_conn_mem(&srv, &fuzz_peer, &st);
  while (p <= end && !st.closed) {
    const char *cut = NULL;
    for (const char *q = p; q + 1 < end; q++)
      if (q[0] == '\xff' && q[1] == '\xfe') {
        cut = q;
        break;
      }
    size_t n = (size_t)((cut ? cut : end) - p);
    ml_server_conn_feed(c, p, n);
    settle(c, &st);
    if (!cut) break;
    p = cut + 2;
  }
  int closed = st.closed;
  if (!closed) ml_server_conn_hangup(c);
  for (int i = 0; i < 4; i++) uv_run(&loop, UV_RUN_NOWAIT);   /* the close callbacks */
  if (getenv("FUZZ_LOG")) {
    ml_log_flush();
    fprintf(stderr, "fuzz: %zu bytes out%s:\n%.*s\n", st.out.len, closed ? ", closed" : "",
            (int)st.out.len, st.out.data);
  }
  if (!memmem(data, size, "HEAD", 4)) check_output(&st.out, closed);
  ml_buf_free(&st.out);
  return 0;
}
