/* The HTTP client's response reader (see httpc_resp.h). */
#include "httpc_resp.h"
#include <stdarg.h>
#include <stdio.h>
#include <uv.h>

#define R(p) ((ml_httpc_resp_t *)(p)->data)

static int fail(ml_httpc_resp_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err, sizeof r->err, fmt, ap);
  va_end(ap);
  return HPE_USER;
}

static int too_large(ml_httpc_resp_t *r, const char *what, size_t limit) {
  return fail(r, "too large: response %s over %zu bytes (%s)", what, limit, r->label);
}

static int on_message_begin(llhttp_t *p) {
  ml_httpc_resp_t *r = R(p);
  ml_headers_clear(&r->headers, 0);
  r->body.len = 0;
  r->headers_done = 0;
  r->has_length = 0;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  ml_httpc_resp_t *r = R(p);
  r->header_bytes += len + 4;
  if (r->header_bytes > ML_HTTPC_MAX_HEADER_BYTES)
    return too_large(r, "headers", ML_HTTPC_MAX_HEADER_BYTES);
  ml_headers_name(&r->headers, at, len);
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ml_httpc_resp_t *r = R(p);
  r->header_bytes += len;
  if (r->header_bytes > ML_HTTPC_MAX_HEADER_BYTES)
    return too_large(r, "headers", ML_HTTPC_MAX_HEADER_BYTES);
  ml_headers_value(&r->headers, at, len);
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  ml_headers_value_done(&R(p)->headers);   /* llhttp refuses an empty name in a response */
  return 0;
}

/* Returns 1 for "no body" (HEAD, 204, 304: RFC 9110 6.4.1, whatever Content-Length says),
 * as llhttp asks. */
static int on_headers_complete(llhttp_t *p) {
  ml_httpc_resp_t *r = R(p);
  if (p->status_code == 101)
    return fail(r, "invalid response: unexpected 101 switching protocols (%s)", r->label);
  r->headers_done = 1;
  int final = p->status_code >= 200;
  int bodyless = r->head || p->status_code == 204 || p->status_code == 304;
  if (final && bodyless) return 1;
  if (p->flags & F_CONTENT_LENGTH) {
    r->has_length = 1;
    r->expected = p->content_length;
    if (final && p->content_length > r->max_size) return too_large(r, "body", r->max_size);
  }
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ml_httpc_resp_t *r = R(p);
  if (r->body.len + len > r->max_size) return too_large(r, "body", r->max_size);
  ml_buf_add(&r->body, at, len);
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  ml_httpc_resp_t *r = R(p);
  if (p->status_code < 200) return 0;   /* 100 Continue and friends: the real one follows */
  r->complete = 1;
  return HPE_PAUSED;
}

static llhttp_settings_t settings;

static void settings_init(void) {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = on_message_begin;
  s.on_header_field = on_header_field;
  s.on_header_value = on_header_value;
  s.on_header_value_complete = on_header_value_complete;
  s.on_headers_complete = on_headers_complete;
  s.on_body = on_body;
  s.on_message_complete = on_message_complete;
  settings = s;
}

void ml_httpc_resp_init(ml_httpc_resp_t *r, int head, size_t max_size, const char *label) {
  static uv_once_t once = UV_ONCE_INIT;
  uv_once(&once, settings_init);
  *r = (ml_httpc_resp_t){0};
  r->head = head;
  r->max_size = max_size;
  r->label = label;
  llhttp_init(&r->parser, HTTP_RESPONSE, &settings);
  r->parser.data = r;
}

void ml_httpc_resp_reset(ml_httpc_resp_t *r) {
  llhttp_reset(&r->parser);
  r->got_bytes = r->headers_done = r->complete = r->has_length = 0;
  ml_headers_clear(&r->headers, 0);
  r->body.len = 0;
  r->header_bytes = 0;
}

int ml_httpc_resp_feed(ml_httpc_resp_t *r, const char *data, size_t len, int *clean) {
  r->got_bytes = 1;
  r->err[0] = 0;
  llhttp_errno_t e = llhttp_execute(&r->parser, data, len);
  if (e == HPE_OK) return ML_HTTPC_RESP_MORE;
  if (e == HPE_PAUSED && r->complete) {
    *clean = llhttp_get_error_pos(&r->parser) == data + len;
    return ML_HTTPC_RESP_DONE;
  }
  if (!r->err[0])
    fail(r, "invalid response: %s (%s)", llhttp_get_error_reason(&r->parser), r->label);
  return ML_HTTPC_RESP_ERROR;
}

int ml_httpc_resp_eof(ml_httpc_resp_t *r) {
  if (r->got_bytes && !r->complete) {
    llhttp_errno_t e = llhttp_finish(&r->parser);   /* a close-delimited body ends here */
    if ((e == HPE_OK || e == HPE_PAUSED) && r->complete) return ML_HTTPC_RESP_DONE;
  }
  if (!r->got_bytes)
    fail(r, "closed: connection closed before any response (%s)", r->label);
  else if (!r->headers_done)
    fail(r, "closed: connection closed in the response headers (%s)", r->label);
  else if (r->has_length)
    fail(r, "closed: connection closed after %zu of %llu body bytes (%s)", r->body.len,
         (unsigned long long)r->expected, r->label);
  else if (r->parser.flags & F_CHUNKED)
    fail(r, "closed: connection closed after %zu body bytes, before the end of the "
            "chunked body (%s)", r->body.len, r->label);
  else
    fail(r, "closed: connection closed after %zu body bytes (%s)", r->body.len, r->label);
  return ML_HTTPC_RESP_ERROR;
}

int ml_httpc_resp_keepalive(const ml_httpc_resp_t *r) {
  return llhttp_should_keep_alive(&r->parser);
}

void ml_httpc_resp_free(ml_httpc_resp_t *r) {
  ml_headers_free(&r->headers);
  ml_buf_free(&r->body);
}
