/* The WebSocket frame reader (core/http/ws_conn.c over wslay): a memory connection
 * (ml_server_conn_mem) whose request is a WebSocket handshake, upgraded at once by a C
 * dispatch to the engine; the input is what the client sends after the handshake, cut into
 * reads at "\xff\xfe". Every message it hands over is echoed back (as wslay's owner would
 * send). Checks: a text message is UTF-8, no message is over the limit, events come in
 * their order (nothing after ML_WS_GONE, which comes once), and the output is a 101 then
 * well-formed server frames (unmasked, nothing after a close frame). */
#define _GNU_SOURCE   /* memmem */
#include "fuzz.h"
#include "peer.h"
#include "log.h"
#include "server.h"
#include "ws_conn.h"
#include "ws_handshake.h"
#include <string.h>

#define MAX_MESSAGE 4096

static uv_loop_t loop;
static ml_server_t srv;

typedef struct {
  fuzz_peer_t peer;          /* first: the memory connection's peer (peer.h) */
  ml_ws_conn_t *ws;          /* NULL once gone */
  int lost, gone, closing;
  ml_buf_t echo;             /* messages to send back at the next ML_WS_READY: kind, len, data */
} state_t;

static state_t *current;

static int utf8_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned c = s[i], len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
                                                         : (c >> 3) == 30 ? 4 : 0;
    if (!len || i + len > n) return 0;
    unsigned cp = len == 1 ? c : c & (0x7f >> len);
    for (unsigned k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    static const unsigned min[] = { 0, 0, 0x80, 0x800, 0x10000 };
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    i += len;
  }
  return 1;
}

static void on_event(void *arg, ml_ws_event_t ev, int kind, const char *data, size_t len) {
  state_t *st = arg;
  FUZZ_CHECK(!st->gone, "event %d after ML_WS_GONE", (int)ev);
  switch (ev) {
  case ML_WS_MESSAGE:
    FUZZ_CHECK(kind == ML_WS_TEXT || kind == ML_WS_BINARY, "message kind %d", kind);
    FUZZ_CHECK(len <= MAX_MESSAGE, "a message of %zu over the limit", len);
    FUZZ_CHECK(kind != ML_WS_TEXT || utf8_ok((const unsigned char *)data, len),
               "a text message that is not UTF-8");
    ml_buf_addc(&st->echo, (char)kind);
    ml_buf_add(&st->echo, &len, sizeof len);
    ml_buf_add(&st->echo, data, len);
    break;
  case ML_WS_CLOSING:
    FUZZ_CHECK(!st->closing, "ML_WS_CLOSING twice");
    FUZZ_CHECK(len <= 123, "a close reason of %zu bytes", len);
    st->closing = 1;
    break;
  case ML_WS_LOST: st->lost = 1; break;
  case ML_WS_READY:
    for (size_t off = 0; off < st->echo.len && st->ws;) {
      int k = st->echo.data[off];
      size_t n;
      memcpy(&n, st->echo.data + off + 1, sizeof n);
      ml_ws_conn_send(st->ws, k, st->echo.data + off + 1 + sizeof n, n);
      off += 1 + sizeof n + n;
    }
    st->echo.len = 0;
    break;
  case ML_WS_DRAINED: break;
  case ML_WS_GONE:
    st->gone = 1;
    st->ws = NULL;
    break;
  }
}

/* The handshake request is complete: answer 101 and hand the connection to the engine. */
static void dispatch(void *ctx, ml_server_conn_t *c) {
  (void)ctx;
  const char *detail;
  FUZZ_CHECK(ml_ws_handshake_check(&c->http, &detail) == 0, "handshake: %s", detail);
  ml_ws_handshake_response(&c->http, NULL, &c->out);
  ml_server_conn_send(c, "", 0);
  ml_ws_config_t cfg = { .max_message = MAX_MESSAGE, .idle_ms = 0, .close_ms = 1 };
  current->ws = ml_ws_conn_new(c, &cfg, on_event, current);
  ml_ws_conn_start(current->ws);
}

static void abort_task(void *ctx, void *task) {
  (void)ctx, (void)task;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  ml_log_configure(getenv("FUZZ_LOG") ? ML_LOG_DEBUG : ML_LOG_ERROR + 1, NULL, NULL);
  uv_loop_init(&loop);
  ml_server_config_t cfg = {
      .host = "127.0.0.1",
      .max_body = 1024,
      .max_header = 4096,
      .header_timeout_ms = 3600 * 1000,
      .keepalive_timeout_ms = 3600 * 1000,
      .ws_max_message = MAX_MESSAGE,
  };
  ml_server_init(&srv, &loop, &cfg);
  srv.dispatch = dispatch;
  srv.abort = abort_task;
  return 0;
}

/* The output: the 101 response, then server frames. */
static void check_output(const ml_buf_t *out) {
  const unsigned char *p = (const unsigned char *)out->data, *end = p + out->len;
  const char *head_end = out->len ? memmem(out->data, out->len, "\r\n\r\n", 4) : NULL;
  FUZZ_CHECK(head_end && memcmp(out->data, "HTTP/1.1 101 ", 13) == 0, "no 101 first");
  p = (const unsigned char *)head_end + 4;
  int closed = 0;
  while (p < end) {
    FUZZ_CHECK(!closed, "a frame after the close frame");
    FUZZ_CHECK(end - p >= 2, "a cut frame header");
    int op = p[0] & 0x0f;
    FUZZ_CHECK((p[0] & 0x80) && !(p[0] & 0x70), "fragmented or RSV bits: %02x", p[0]);
    FUZZ_CHECK(op == 1 || op == 2 || op == 8 || op == 9 || op == 10, "opcode %d", op);
    FUZZ_CHECK(!(p[1] & 0x80), "a masked server frame");
    uint64_t len = p[1] & 0x7f;
    size_t hlen = 2;
    if (len == 126) {
      FUZZ_CHECK(end - p >= 4, "cut");
      len = (uint64_t)p[2] << 8 | p[3];
      hlen = 4;
    } else if (len == 127) {
      FUZZ_CHECK(end - p >= 10, "cut");
      len = 0;
      for (int i = 0; i < 8; i++) len = len << 8 | p[2 + i];
      hlen = 10;
    }
    FUZZ_CHECK((uint64_t)(end - p) - hlen >= len, "a cut frame payload");
    if (op >= 8) FUZZ_CHECK(len <= 125, "a control frame of %llu", (unsigned long long)len);
    if (op == 8) closed = 1;
    p += hlen + len;
  }
}

static const char handshake[] =
    "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  state_t st = {0};
  current = &st;
  ml_server_conn_t *c = ml_server_conn_mem(&srv, &fuzz_peer, &st);
  ml_server_conn_feed(c, handshake, sizeof handshake - 1);
  const char *p = (const char *)data, *end = p + size;
  for (;;) {
    while (!st.peer.closed && (c->mem && c->mem->fed.len)) uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 3 && !st.peer.closed; i++) uv_run(&loop, UV_RUN_NOWAIT);   /* READY */
    if (st.peer.closed || p >= end) break;
    const char *cut = memmem(p, (size_t)(end - p), "\xff\xfe", 2);
    size_t n = (size_t)((cut ? cut : end) - p);
    if (n) ml_server_conn_feed(c, p, n);
    p = cut ? cut + 2 : end;
  }
  if (!st.peer.closed) ml_server_conn_hangup(c);
  for (int i = 0; i < 8 && !st.gone; i++) uv_run(&loop, UV_RUN_NOWAIT);
  FUZZ_CHECK(st.gone, "the engine did not go");
  for (int i = 0; i < 2; i++) uv_run(&loop, UV_RUN_NOWAIT);   /* the connection's memory */
  check_output(&st.peer.out);
  ml_buf_free(&st.peer.out);
  ml_buf_free(&st.echo);
  current = NULL;
  return 0;
}
