/* Static files' pure parts: path decoding, validators and ranges, HTTP dates, MIME types. */
#include "httpdate.h"
#include "mime.h"
#include "static_cond.h"
#include "static_path.h"
#include "unit.h"
#include <stdlib.h>

static int decode(const char *s, const char *want, int want_dir) {
  ml_buf_t b = {0};
  int dir = -1, rc = ml_static_path_decode(s, strlen(s), &b, &dir);
  int ok = want ? rc == 0 && strcmp(b.data, want) == 0 && dir == want_dir : rc == -1;
  if (!ok) printf("  decode(%s): rc %d, '%s', dir %d\n", s, rc, rc ? "" : b.data, dir);
  ml_buf_free(&b);
  return ok;
}

TEST(path_decode) {
  CHECK(decode("a.css", "a.css", 0));
  CHECK(decode("", "", 1));
  CHECK(decode("sub/", "sub/", 1));
  CHECK(decode("a%20b/c%2Ed", "a b/c.d", 0));
  CHECK(decode("..a/b..", "..a/b..", 0));
  const char *bad[] = {"..", "../x", "a/..", "a/../b", "%2e%2e/x", "%2E.", ".",
                       "./a", "a/./b", "a%2fb", "a%2Fb", "a%00b", "a%5cb", "a\\b",
                       "a//b", "/a", "%", "%4", "%zz", "a%2"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(decode(bad[i], NULL, 0));
}

static size_t len_of(const char *s) { return s ? strlen(s) : 0; }

static int nm(const char *inm, const char *ims, const char *etag, size_t el, time_t mtime) {
  return ml_static_not_modified(inm, len_of(inm), ims, len_of(ims), etag, el, mtime);
}

TEST(not_modified) {
  const char *etag = "\"5-a\"";
  size_t el = strlen(etag);
  time_t mtime = 784111777;   /* Sun, 06 Nov 1994 08:49:37 GMT */
#define NM(inm, ims) nm(inm, ims, etag, el, mtime)
  CHECK(NM("\"5-a\"", NULL));
  CHECK(NM("W/\"5-a\"", NULL));
  CHECK(NM("\"x\", W/\"5-a\"", NULL));
  CHECK(NM("*", NULL));
  CHECK(!NM("\"x\"", NULL));
  CHECK(!NM("5-a", NULL));
  CHECK(!NM("\"x\"", "Sun, 06 Nov 1994 08:49:37 GMT"));   /* If-None-Match decides */
  CHECK(NM(NULL, "Sun, 06 Nov 1994 08:49:37 GMT"));
  CHECK(NM(NULL, "Mon, 07 Nov 1994 08:49:37 GMT"));
  CHECK(!NM(NULL, "Sun, 06 Nov 1994 08:49:36 GMT"));
  CHECK(!NM(NULL, "yesterday"));
  CHECK(!NM(NULL, NULL));
}

static int range(const char *r, const char *ir, uint64_t size, uint64_t *a, uint64_t *b) {
  return ml_static_range(r, len_of(r), ir, len_of(ir), "\"e\"", 3,
                         784111777, size, a, b);
}

TEST(ranges) {
  uint64_t a = 0, b = 0;
  CHECK_EQ_INT(range(NULL, NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("bytes=0-4", NULL, 10, &a, &b), 206);
  CHECK_EQ_INT(a, 0);
  CHECK_EQ_INT(b, 4);
  CHECK_EQ_INT(range("bytes=7-", NULL, 10, &a, &b), 206);
  CHECK_EQ_INT(a, 7);
  CHECK_EQ_INT(b, 9);
  CHECK_EQ_INT(range("Bytes= 2-100 ", NULL, 10, &a, &b), 206);
  CHECK_EQ_INT(b, 9);
  CHECK_EQ_INT(range("bytes=-3", NULL, 10, &a, &b), 206);
  CHECK_EQ_INT(a, 7);
  CHECK_EQ_INT(range("bytes=-30", NULL, 10, &a, &b), 206);
  CHECK_EQ_INT(a, 0);
  CHECK_EQ_INT(range("bytes=10-", NULL, 10, &a, &b), 416);
  CHECK_EQ_INT(range("bytes=-0", NULL, 10, &a, &b), 416);
  CHECK_EQ_INT(range("bytes=0-", NULL, 0, &a, &b), 416);
  CHECK_EQ_INT(range("bytes=-5", NULL, 0, &a, &b), 416);
  CHECK_EQ_INT(range("bytes=0-1,3-4", NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("bytes=4-2", NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("bytes=-", NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("bytes=99999999999999999999999-", NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("items=0-1", NULL, 10, &a, &b), 200);
  CHECK_EQ_INT(range("bytes=0-1", "\"e\"", 10, &a, &b), 206);
  CHECK_EQ_INT(range("bytes=0-1", "W/\"e\"", 10, &a, &b), 200);   /* strong only */
  CHECK_EQ_INT(range("bytes=0-1", "Sun, 06 Nov 1994 08:49:37 GMT", 10, &a, &b), 206);
  CHECK_EQ_INT(range("bytes=0-1", "Sun, 06 Nov 1994 08:49:38 GMT", 10, &a, &b), 200);
}

TEST(http_dates) {
  char out[ML_HTTPDATE_LEN + 1];
  ml_httpdate_format(784111777, out);
  CHECK_EQ_STR(out, "Sun, 06 Nov 1994 08:49:37 GMT");
  const char *forms[] = {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                         "Sun Nov  6 08:49:37 1994"};
  for (int i = 0; i < 3; i++) {
    time_t t = 0;
    CHECK_EQ_INT(ml_httpdate_parse(forms[i], strlen(forms[i]), &t), 0);
    CHECK_EQ_INT(t, 784111777);
  }
  const char *bad[] = {"", "Sun, 06 Nov 1994 08:49:37", "Sun, 06 Foo 1994 08:49:37 GMT",
                       "Sun, 06 Nov 1994 25:49:37 GMT", "Sun, 6 Nov 1994 08:49:37 GMT x",
                       "1994-11-06T08:49:37Z"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    time_t t;
    CHECK_EQ_INT(ml_httpdate_parse(bad[i], strlen(bad[i]), &t), -1);
  }
}

static const char *ctype(const char *name) {
  static char out[128];
  ml_mime_content_type(name, strlen(name), out, sizeof out);
  return out;
}

TEST(mime_types) {
  CHECK_EQ_STR(ctype("index.html"), "text/html; charset=utf-8");
  CHECK_EQ_STR(ctype("A/B.HTML"), "text/html; charset=utf-8");
  CHECK_EQ_STR(ctype("x.json"), "application/json; charset=utf-8");
  CHECK_EQ_STR(ctype("x.svg"), "image/svg+xml");
  CHECK_EQ_STR(ctype("x.png"), "image/png");
  CHECK_EQ_STR(ctype("x.wasm"), "application/wasm");
  CHECK_EQ_STR(ctype("x.nope"), "application/octet-stream");
  CHECK_EQ_STR(ctype("noext"), "application/octet-stream");
  CHECK_EQ_STR(ctype("dir.d/noext"), "application/octet-stream");
  /* without /etc/mime.types: the built-in table */
  CHECK_EQ_INT(ml_mime_load("/nonexistent/mime.types"), -1);
  CHECK_EQ_STR(ctype("x.css"), "text/css; charset=utf-8");
  CHECK_EQ_STR(ctype("x.js"), "text/javascript; charset=utf-8");
  CHECK_EQ_STR(ctype("x.docx"), "application/octet-stream");
  CHECK(ml_mime_load("/etc/mime.types") > 100);
  CHECK_EQ_STR(ctype("x.docx"),
               "application/vnd.openxmlformats-officedocument.wordprocessingml.document");
}

int main(void) {
  RUN(path_decode);
  RUN(not_modified);
  RUN(ranges);
  RUN(http_dates);
  RUN(mime_types);
  return UNIT_DONE();
}
