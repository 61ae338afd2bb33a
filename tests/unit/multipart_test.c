/* The streaming multipart parser (core/http/multipart.c): every body is fed whole, then
 * one byte at a time, then in every two-piece split, and must give the same events; the
 * boundary from a Content-Type; malformed bodies and their reasons. */
#include "multipart.h"
#include "unit.h"
#include <stdlib.h>

/* The events as text: [name|filename|type]content{end} per part, "-" for no filename. */
typedef struct {
  ml_buf_t log;
  int stop_at_begin;
} events_t;

static int on_begin(void *ud, const ml_multipart_part_t *p) {
  events_t *e = ud;
  ml_buf_addc(&e->log, '[');
  ml_buf_addstr(&e->log, p->name);
  ml_buf_addc(&e->log, '|');
  ml_buf_addstr(&e->log, p->filename ? p->filename : "-");
  ml_buf_addc(&e->log, '|');
  ml_buf_addstr(&e->log, p->content_type);
  ml_buf_addc(&e->log, ']');
  return e->stop_at_begin ? -1 : 0;
}

static int on_data(void *ud, const char *p, size_t n) {
  ml_buf_add(&((events_t *)ud)->log, p, n);
  return 0;
}

static int on_end(void *ud) {
  ml_buf_addstr(&((events_t *)ud)->log, "{end}");
  return 0;
}

static const ml_multipart_cbs_t cbs = {on_begin, on_data, on_end};

/* Parses body in pieces split at `cut` (0: whole; SIZE_MAX: one byte at a time). Returns
 * the log (caller frees) and the error, NULL if it parsed. */
static char *parse(const char *boundary, const char *body, size_t len, size_t cut,
                   const char **error) {
  events_t e = {0};
  ml_multipart_t mp;
  ml_multipart_init(&mp, boundary, strlen(boundary), &cbs, &e);
  int rc = 0;
  if (cut == (size_t)-1) {
    for (size_t i = 0; i < len && rc == 0; i++) rc = ml_multipart_feed(&mp, body + i, 1);
  } else {
    if (cut > len) cut = len;
    rc = ml_multipart_feed(&mp, body, cut);
    if (rc == 0) rc = ml_multipart_feed(&mp, body + cut, len - cut);
  }
  if (rc == 0) rc = ml_multipart_finish(&mp);
  *error = rc ? (mp.error ? mp.error : "stopped") : NULL;
  ml_multipart_free(&mp);
  ml_buf_addc(&e.log, '\0');
  return e.log.data;
}

/* Checks that every way of feeding body gives `want` (and `want_error`). */
static void check(const char *boundary, const char *body, const char *want,
                  const char *want_error) {
  size_t len = strlen(body);
  for (size_t cut = 0; cut <= len + 1; cut++) {
    const char *error;
    size_t how = cut == len + 1 ? (size_t)-1 : cut;
    char *log = parse(boundary, body, len, how, &error);
    int ok = strcmp(log, want) == 0 &&
             (want_error ? error && strcmp(error, want_error) == 0 : error == NULL);
    if (!ok) {
      printf("  cut %zu: \"%s\" (%s), expected \"%s\" (%s)\n", cut, log,
             error ? error : "no error", want, want_error ? want_error : "no error");
      unit_cur_failed = 1;
      free(log);
      return;
    }
    free(log);
  }
}

TEST(fields_and_files) {
  check("XyZ",
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
        "1\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=\"up\"; filename=\"f.txt\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        "bytes\r\nwith\rCR and \r\n-- and \r\n--XyZ-almost\r\n"
        "--XyZ--\r\n",
        "[a|-|text/plain]1{end}[up|f.txt|application/octet-stream]"
        "bytes\r\nwith\rCR and \r\n-- and {end}",
        "Malformed multipart body: unexpected bytes after a boundary");
  check("XyZ",
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"a\"\r\n\r\n"
        "1\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=\"up\"; filename=\"f.txt\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
        "bytes\r\nwith\rCR and \r\n-- and \r\n--XyY \r\n--Xy\r\r\n\r\n"
        "--XyZ--",
        "[a|-|text/plain]1{end}[up|f.txt|application/octet-stream]"
        "bytes\r\nwith\rCR and \r\n-- and \r\n--XyY \r\n--Xy\r\r\n{end}",
        NULL);
}

TEST(preamble_epilogue_padding_empty) {
  check("b",
        "preamble\r\n--b \t\r\nContent-Disposition: form-data; name=x\r\n\r\n\r\n--b--"
        "epilogue\r\n--b\r\nignored",
        "[x|-|text/plain]{end}", NULL);
  check("b", "--b--\r\n", "", NULL);
  check("b", "\r\n--b\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n\r\n--b--",
        "[e|-|text/plain]\r\n{end}", NULL);
}

TEST(disposition_parameters) {
  check("--==q",
        "----==q\r\nContent-Disposition: form-data; filename=\"a \\\"b\\\".txt\"; "
        "name=\"n;1\"\r\n\r\nv\r\n"
        "----==q\r\nContent-Disposition: form-data; name=f; filename=\"plain.txt\"; "
        "filename*=UTF-8''%e2%82%ac%20rate.txt\r\n\r\n\r\n"
        "----==q\r\nContent-Disposition: form-data; name=\"empty\"; filename=\"\"\r\n\r\n"
        "\r\n----==q--",
        "[n;1|a \"b\".txt|text/plain]v{end}[f|\xe2\x82\xac rate.txt|text/plain]{end}"
        "[empty||text/plain]{end}",
        NULL);
}

TEST(malformed) {
  check("b", "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b\r\n",
        "[a|-|text/plain]1{end}", "Malformed multipart body: missing the final boundary");
  check("b", "", "", "Malformed multipart body: missing the final boundary");
  check("b", "no boundary here", "", "Malformed multipart body: missing the final boundary");
  check("b", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--", "",
        "Malformed multipart body: a part has no name in its Content-Disposition");
  check("b", "--b\r\nContent-Disposition: form-data; filename=\"x\"\r\n\r\nx\r\n--b--", "",
        "Malformed multipart body: a part has no name in its Content-Disposition");
  check("b", "--b\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n--b--", "",
        "Malformed multipart body: unterminated quoted string in a part header");
  check("b", "--b\nContent-Disposition: form-data; name=a\n\nx\n--b--", "",
        "Malformed multipart body: unexpected bytes after a boundary");
  check("b", "--b\r\nContent-Disposition: form-data; name=a\n\r\nx\r\n--b--", "",
        "Malformed multipart body: part header lines must end in CRLF");
  check("b", "--b\r\nno colon\r\n\r\nx\r\n--b--", "",
        "Malformed multipart body: a part header line has no name");
  check("b", "--bx\r\n", "", "Malformed multipart body: unexpected bytes after a boundary");
}

TEST(header_block_limit) {
  size_t n = ML_MULTIPART_MAX_HEAD + 100;
  char *body = malloc(n + 64);
  strcpy(body, "--b\r\nX-Big: ");
  size_t at = strlen(body);
  memset(body + at, 'a', n - at);
  strcpy(body + n, "\r\n\r\n");
  const char *error;
  char *log = parse("b", body, strlen(body), 0, &error);
  CHECK_EQ_STR(error, "Malformed multipart body: part headers too large");
  free(log);
  free(body);
}

TEST(callback_stops) {
  events_t e = {.stop_at_begin = 1};
  ml_multipart_t mp;
  ml_multipart_init(&mp, "b", 1, &cbs, &e);
  static const char body[] = "--b\r\nContent-Disposition: form-data; name=a\r\n\r\nx";
  CHECK_EQ_INT(ml_multipart_feed(&mp, body, sizeof body - 1), -1);
  CHECK(mp.error == NULL);
  CHECK_EQ_INT(ml_multipart_feed(&mp, "more", 4), -1);
  ml_multipart_free(&mp);
  ml_buf_free(&e.log);
}

static const char *boundary_of(const char *ctype, int *is_form) {
  static ml_buf_t b;
  *is_form = ml_multipart_content_type(ctype, strlen(ctype), &b);
  ml_buf_addc(&b, '\0');
  return b.data;
}

TEST(content_type) {
  int form;
  CHECK_EQ_STR(boundary_of("multipart/form-data; boundary=abc", &form), "abc");
  CHECK_EQ_INT(form, 1);
  CHECK_EQ_STR(boundary_of(" Multipart/Form-Data ;charset=x; BOUNDARY=\"a b;c\" ", &form),
               "a b;c");
  CHECK_EQ_INT(form, 1);
  CHECK_EQ_STR(boundary_of("multipart/form-data", &form), "");
  CHECK_EQ_INT(form, 1);
  CHECK_EQ_STR(boundary_of("multipart/form-data; boundary=\"\"", &form), "");
  CHECK_EQ_STR(boundary_of("multipart/form-data; boundary=0123456789012345678901234567890123"
                           "45678901234567890123456789012345678901", &form), "");
  boundary_of("multipart/form-datax; boundary=a", &form);
  CHECK_EQ_INT(form, 0);
  boundary_of("application/x-www-form-urlencoded", &form);
  CHECK_EQ_INT(form, 0);
}

int main(void) {
  RUN(fields_and_files);
  RUN(preamble_epilogue_padding_empty);
  RUN(disposition_parameters);
  RUN(malformed);
  RUN(header_block_limit);
  RUN(callback_stops);
  RUN(content_type);
  return UNIT_DONE();
}
