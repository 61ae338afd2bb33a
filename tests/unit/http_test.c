/* Parser glue unit tests: fields copied out of split input, limits, smuggling shapes. */
#include "http.h"
#include "response.h"
#include "router.h"
#include "unit.h"

static int begins, headers_seen;
static void on_begin(ml_http_t *h) { (void)h; begins++; }
static void on_headers(ml_http_t *h) { (void)h; headers_seen++; }

/* Feeds `req` to a fresh parser in pieces of `step` bytes; returns the last result. */
static int feed(ml_http_t *h, const char *req, size_t step, size_t max_body) {
  ml_http_init(h, 16384, max_body, NULL);
  h->on_begin = on_begin;
  h->on_headers = on_headers;
  size_t len = strlen(req), off = 0;
  int rc = ML_HTTP_MORE;
  while (off < len) {
    size_t n = len - off < step ? len - off : step;
    size_t used = 0;
    rc = ml_http_execute(h, req + off, n, &used);
    off += used;
    if (rc != ML_HTTP_MORE) break;
  }
  return rc;
}

static const char *hdr(ml_http_t *h, const char *name, char *buf) {
  size_t len;
  const char *v = ml_http_header(h, name, &len);
  if (!v) return NULL;
  memcpy(buf, v, len);
  buf[len] = '\0';
  return buf;
}

TEST(split_input_is_reassembled) {
  const char *req = "POST /items/5?x=1 HTTP/1.1\r\nHost: example\r\nX-Multi: a b  \r\n"
                    "Content-Length: 5\r\n\r\nhello";
  for (size_t step = 1; step <= 7; step++) {
    ml_http_t h;
    char buf[64];
    CHECK_EQ_INT(feed(&h, req, step, 1000), ML_HTTP_REQUEST);
    CHECK(h.url_len == 12 && memcmp(ml_http_url(&h), "/items/5?x=1", 12) == 0);
    CHECK_EQ_INT(h.method, ML_M_POST);
    CHECK_EQ_STR(hdr(&h, "host", buf), "example");
    CHECK_EQ_STR(hdr(&h, "x-multi", buf), "a b");   /* trailing whitespace trimmed */
    CHECK(h.body.len == 5 && memcmp(h.body.data, "hello", 5) == 0);
    CHECK(h.keepalive);
    ml_http_free(&h);
  }
}

TEST(pipelined_requests_stop_at_each_message) {
  ml_http_t h;
  const char *two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
  ml_http_init(&h, 16384, 1000, NULL);
  size_t used;
  CHECK_EQ_INT(ml_http_execute(&h, two, strlen(two), &used), ML_HTTP_REQUEST);
  CHECK(memcmp(ml_http_url(&h), "/a", 2) == 0);
  size_t rest = strlen(two) - used;
  CHECK_EQ_INT(rest, strlen(two) / 2);
  CHECK_EQ_INT(ml_http_execute(&h, two + used, rest, &used), ML_HTTP_REQUEST);
  CHECK(memcmp(ml_http_url(&h), "/b", 2) == 0);
  ml_http_free(&h);
}

TEST(chunked_body) {
  ml_http_t h;
  CHECK_EQ_INT(feed(&h, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", 3, 1000), ML_HTTP_REQUEST);
  CHECK(h.body.len == 5 && memcmp(h.body.data, "abcde", 5) == 0);
  ml_http_free(&h);
}

TEST(limits) {
  ml_http_t h;
  CHECK_EQ_INT(feed(&h, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n", 100, 1000),
               ML_HTTP_ERROR);
  CHECK_EQ_INT(h.error_status, 413);
  ml_http_free(&h);
  char big[20000];
  strcpy(big, "GET / HTTP/1.1\r\nHost: x\r\nX: ");
  size_t head = strlen(big);
  memset(big + head, 'a', 17000);
  strcpy(big + head + 17000, "\r\n\r\n");
  CHECK_EQ_INT(feed(&h, big, 4096, 1000), ML_HTTP_ERROR);
  CHECK_EQ_INT(h.error_status, 431);
  ml_http_free(&h);
}

/* "POST" with a chunked body: one chunk per extension length in `ext`, then `trailer`
 * bytes of trailers; fed in pieces of `step` bytes. Returns the error status, or 0. */
static int chunked_with(const int *ext, int n, int trailer, size_t step, size_t max_body) {
  static char req[40000];
  int len = snprintf(req, sizeof req,
                     "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < n; i++) {
    len += snprintf(req + len, sizeof req - (size_t)len, "1;");
    memset(req + len, 'e', (size_t)ext[i]);
    len += ext[i];
    len += snprintf(req + len, sizeof req - (size_t)len, "\r\nZ\r\n");
  }
  len += snprintf(req + len, sizeof req - (size_t)len, "0\r\nT: ");
  memset(req + len, 't', (size_t)trailer);
  len += trailer;
  snprintf(req + len, sizeof req - (size_t)len, "\r\n\r\n");
  ml_http_t h;
  int rc = feed(&h, req, step, max_body);
  int status = rc == ML_HTTP_ERROR ? h.error_status : rc == ML_HTTP_REQUEST ? 0 : -1;
  ml_http_free(&h);
  return status;
}

TEST(chunk_extensions_and_trailers_are_limited) {
  const int two_lines[] = {4095, 4095}, long_line[] = {4097}, many[] = {4000, 4000, 4000};
  for (size_t step = 1; step <= 4096; step *= 8) {
    CHECK_EQ_INT(chunked_with(two_lines, 2, 16000, step, 100000), 0);
    CHECK_EQ_INT(chunked_with(long_line, 1, 0, step, 100000), 413);
    CHECK_EQ_INT(chunked_with(many, 3, 0, step, 10000), 413);   /* they count toward max_body */
    CHECK_EQ_INT(chunked_with(two_lines, 2, 17000, step, 100000), 431);
  }
}

TEST(smuggling_shapes_are_rejected) {
  const char *bad[] = {
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\nY: b\r\n\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ml_http_t h;
    int rc = feed(&h, bad[i], 1000, 1000);
    if (rc != ML_HTTP_ERROR) printf("  case %zu accepted\n", i);
    CHECK_EQ_INT(rc, ML_HTTP_ERROR);
    CHECK_EQ_INT(h.error_status, 400);
    ml_http_free(&h);
  }
}

TEST(expect_continue_and_http10) {
  ml_http_t h;
  CHECK_EQ_INT(feed(&h, "PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                        "Content-Length: 1\r\n\r\nx", 1000, 10),
               ML_HTTP_REQUEST);
  CHECK(h.expect_continue);
  ml_http_free(&h);
  CHECK_EQ_INT(feed(&h, "GET / HTTP/1.0\r\n\r\n", 1000, 10), ML_HTTP_REQUEST);
  CHECK(!h.keepalive);
  ml_http_free(&h);
  CHECK_EQ_INT(feed(&h, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1000, 10),
               ML_HTTP_REQUEST);
  CHECK(!h.keepalive);
  ml_http_free(&h);
}

TEST(host_is_checked) {
  const struct { const char *req; int status; } cases[] = {
      {"GET / HTTP/1.1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: local host\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", 400},
      {"GET / HTTP/1.0\r\n\r\n", 0},
      {"GET / HTTP/1.1\r\nHost: example.com:80\r\n\r\n", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ml_http_t h;
    int rc = feed(&h, cases[i].req, 7, 1000);
    CHECK_EQ_INT(rc, cases[i].status ? ML_HTTP_ERROR : ML_HTTP_REQUEST);
    CHECK_EQ_INT(h.error_status, cases[i].status);
    ml_http_free(&h);
  }
}

TEST(host_grammar) {
  const char *good[] = {"", "a", "example.com", "example.com:", "example.com:8080", "127.0.0.1",
                        "[::1]", "[::1]:443", "[::ffff:192.0.2.1]", "[v7.x:y]", "a%2Fb",
                        "a-b._~!$&'()*+,;="};
  const char *bad[] = {"local host", "a/b", "user@h", "h:8o", "h:1:2", "[::1", "[::1]x",
                       "[::g]", "[fe80::1%25eth0]", "[v.x]", "[v1.]", "a%2", "a%zz", "h\t",
                       "\"h\"", "a\\b", "[]", "h?", "h#"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    if (!ml_http_host_ok(good[i], strlen(good[i]))) printf("  refused \"%s\"\n", good[i]);
    CHECK(ml_http_host_ok(good[i], strlen(good[i])));
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (ml_http_host_ok(bad[i], strlen(bad[i]))) printf("  accepted \"%s\"\n", bad[i]);
    CHECK(!ml_http_host_ok(bad[i], strlen(bad[i])));
  }
}

/* ml_resp_status writes into the room it reserves itself, for any int status: a buffer
 * whose capacity is just what a 3-digit status line needs must not be overrun. */
TEST(status_line_fits_its_reservation) {
  int statuses[] = {200, 599, 99, 7, 12345, -1, 2147483647};
  for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
    ml_buf_t b = {0};
    ml_buf_reserve(&b, 1);
    size_t rlen = strlen(ml_status_reason(statuses[i]));
    b.len = b.cap - (15 + rlen);   /* the room ml_resp_status reserves, nothing more */
    ml_resp_status(&b, statuses[i]);
    if (b.len > b.cap) printf("  status %d: wrote %zu bytes past the buffer\n", statuses[i], b.len - b.cap);
    CHECK(b.len <= b.cap);
    ml_buf_free(&b);
  }
}

int main(void) {
  RUN(split_input_is_reassembled);
  RUN(pipelined_requests_stop_at_each_message);
  RUN(chunked_body);
  RUN(limits);
  RUN(chunk_extensions_and_trailers_are_limited);
  RUN(smuggling_shapes_are_rejected);
  RUN(expect_continue_and_http10);
  RUN(host_is_checked);
  RUN(host_grammar);
  RUN(status_line_fits_its_reservation);
  CHECK(begins > 0 && headers_seen > 0);
  return UNIT_DONE();
}
