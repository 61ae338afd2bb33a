/* The HTTP client's response reader (core/clients/httpc_resp.c). The input's first byte
 * is the request's side (bit 0: it was HEAD; bit 1: a 16-byte body limit), the rest what
 * the server sent before closing. It is read whole, then one byte at a time (each byte in
 * a buffer of its own: ASan sees an over-read): both give the same verdict, status and
 * body. A complete response is a final one (not 1xx, not 101), within the body limit, as
 * long as its Content-Length says; a failure says why. */
#include "fuzz.h"
#include "httpc_resp.h"
#include <string.h>

typedef struct {
  int rc, status;
  ml_buf_t body;
  char err[512];
} result_t;

static result_t parse(const char *data, size_t len, int head, size_t max, size_t step) {
  ml_httpc_resp_t r;
  ml_httpc_resp_init(&r, head, max, "GET http://fuzz/");
  int rc = ML_HTTPC_RESP_MORE, clean = 0;
  for (size_t off = 0; off < len && rc == ML_HTTPC_RESP_MORE;) {
    size_t n = step && step < len - off ? step : len - off;
    char *piece = malloc(n);
    memcpy(piece, data + off, n);
    rc = ml_httpc_resp_feed(&r, piece, n, &clean);
    free(piece);
    off += n;
  }
  if (rc == ML_HTTPC_RESP_MORE) rc = ml_httpc_resp_eof(&r);
  FUZZ_CHECK(rc == ML_HTTPC_RESP_DONE || rc == ML_HTTPC_RESP_ERROR, "rc %d", rc);
  result_t res = { rc, r.parser.status_code, {0}, "" };
  if (rc == ML_HTTPC_RESP_ERROR) {
    FUZZ_CHECK(r.err[0], "an error without a message");
    snprintf(res.err, sizeof res.err, "%s", r.err);
  } else {
    int status = r.parser.status_code;
    FUZZ_CHECK(status >= 200 && status != 101, "complete with status %d", status);
    FUZZ_CHECK(r.body.len <= max, "a body of %zu over the limit %zu", r.body.len, max);
    if (head || status == 204 || status == 304) FUZZ_CHECK(r.body.len == 0, "a body");
    else if (r.has_length)
      FUZZ_CHECK(r.body.len == r.expected, "%zu bytes, %llu said", r.body.len,
                 (unsigned long long)r.expected);
    ml_buf_add(&res.body, r.body.data ? r.body.data : "", r.body.len);
  }
  ml_httpc_resp_free(&r);
  return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int head = data[0] & 1;
  size_t max = data[0] & 2 ? 16 : 1 << 20;
  const char *p = (const char *)data + 1;
  size_t len = size - 1;
  result_t whole = parse(p, len, head, max, 0);
  result_t bytes = parse(p, len, head, max, 1);
  FUZZ_CHECK(whole.rc == bytes.rc, "whole: %s / bytewise: %s", whole.err, bytes.err);
  if (whole.rc == ML_HTTPC_RESP_DONE)
    FUZZ_CHECK(whole.status == bytes.status && whole.body.len == bytes.body.len &&
               (!whole.body.len || memcmp(whole.body.data, bytes.body.data, whole.body.len) == 0),
               "status %d / %d, body %zu / %zu", whole.status, bytes.status, whole.body.len,
               bytes.body.len);
  ml_buf_free(&whole.body);
  ml_buf_free(&bytes.body);
  return 0;
}
