/* llhttp callbacks for requests (see http.h). Limits are enforced while parsing:
 * the header block (request line + headers, then any chunked trailers) against max_header
 * -> 431, the body (its data and chunk extensions) against max_body -> 413 as soon as
 * Content-Length announces it or chunks exceed it, and the chunk extensions of one chunk
 * line against MAX_CHUNK_EXT -> 413. What RFC 9112 says to refuse is refused once the
 * header block is in (Host, request target, transfer codings). llhttp itself rejects
 * smuggling shapes (Content-Length with Transfer-Encoding, duplicate Content-Length, bad
 * chunk sizes) since moonlet enables none of its lenient modes but the one for versions,
 * which on_version_complete narrows down. When a body follows the header block, the owner
 * (on_body_head) may set this request's limit and hand the body to an upload (upload.h),
 * which then takes it piece by piece instead of h->body; its verdicts (a malformed
 * multipart body, ...) end the request like the parser's own. */
#include "http.h"
#include "response.h"
#include "router.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <strings.h>

#define H(p) ((ml_http_t *)(p)->data)
#define MAX_CHUNK_EXT 4096   /* bytes of extension names and values on one chunk line */

static int fail(ml_http_t *h, int status, const char *detail) {
  h->error_status = status;
  h->error_detail = detail;
  return HPE_USER;
}

static int count_header_bytes(ml_http_t *h, size_t n) {
  h->header_bytes += n;
  if (h->header_bytes > h->max_header) return fail(h, 431, "Request Header Fields Too Large");
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  ml_http_t *h = H(p);
  ml_headers_clear(&h->headers, 0);
  h->url_len = 0;
  h->body.len = 0;
  h->body_bytes = 0;
  h->max_body = h->max_body_default;
  ml_http_drop_upload(h);   /* none: the last request's went to its dispatch */
  h->header_bytes = 0;
  h->chunk_ext_bytes = h->chunk_line_ext_bytes = 0;
  h->expect_continue = 0;
  h->headers_done = 0;
  h->hosts = h->has_expect = 0;
  h->in_message = 1;
  if (h->on_begin) h->on_begin(h);
  return 0;
}

/* RFC 9110 6.2, 15.6.6: every 1.x is answered as HTTP/1.1 (llhttp's lenient version mode,
 * set in ml_http_init, lets 1.2 to 1.9 through); any other major version gets 505. */
static int on_version_complete(llhttp_t *p) {
  if (p->http_major != 1) return fail(H(p), 505, "HTTP Version Not Supported");
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  ml_http_t *h = H(p);
  if (count_header_bytes(h, len)) return HPE_USER;
  ml_headers_raw(&h->headers, at, len);
  h->url_len += (uint32_t)len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  ml_http_t *h = H(p);
  if (count_header_bytes(h, len + 4)) return HPE_USER;
  if (h->headers_done) return 0;   /* chunked trailers: counted, never merged into the headers */
  /* RFC 9112 5.1: a field name is a token; whitespace before the colon is an attack. */
  if (len && !ml_header_name_ok(at, len)) return fail(h, 400, "Bad Request");
  ml_headers_name(&h->headers, at, len);
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ml_http_t *h = H(p);
  if (count_header_bytes(h, len)) return HPE_USER;
  if (h->headers_done) return 0;
  ml_headers_value(&h->headers, at, len);
  return 0;
}

static int on_header_value_complete(llhttp_t *p) {
  ml_http_t *h = H(p);
  if (h->headers_done) return 0;
  if (ml_headers_value_done(&h->headers)) return fail(h, 400, "Bad Request");
  /* the headers on_headers_complete checks are noted as they pass: it looks for them only
   * when they came, each request's header list is not searched three times */
  const ml_header_t *hd = &h->headers.list[h->headers.n - 1];
  const char *name = h->headers.store.data + hd->name_off;
  if (hd->name_len == 4 && memcmp(name, "host", 4) == 0) {
    if (h->hosts < 2) h->hosts++;
  } else if (hd->name_len == 6 && memcmp(name, "expect", 6) == 0) {
    h->has_expect = 1;
  }
  return 0;
}

/* RFC 9112 3.2: a request with two Host headers or an invalid one is refused, and so is an
 * HTTP/1.1 request without one (HTTP/1.0 may leave it out). */
static int check_host(ml_http_t *h, const llhttp_t *p) {
  size_t len;
  if (h->hosts == 0) return p->http_minor >= 1 ? fail(h, 400, "Missing Host header") : 0;
  if (h->hosts > 1) return fail(h, 400, "Duplicate Host header");
  const char *host = ml_headers_get(&h->headers, "host", &len);
  if (!ml_http_host_ok(host, len)) return fail(h, 400, "Invalid Host header");
  return 0;
}

/* RFC 9112 6.1: chunked is the only transfer coding moonlet decodes. llhttp refuses (400) a
 * request whose last coding is not chunked; one that names another coding before chunked
 * gets 501, rather than a body handed to the app still encoded. */
static int check_transfer_codings(ml_http_t *h) {
  int at = 0;
  size_t len;
  const char *v;
  while ((v = ml_headers_next(&h->headers, "transfer-encoding", &at, &len))) {
    const char *end = v + len;
    while (v < end) {   /* each list element, OWS trimmed; empty ones are allowed */
      const char *comma = memchr(v, ',', (size_t)(end - v));
      const char *stop = comma ? comma : end;
      while (v < stop && (*v == ' ' || *v == '\t')) v++;
      while (stop > v && (stop[-1] == ' ' || stop[-1] == '\t')) stop--;
      size_t n = (size_t)(stop - v);
      if (n && !(n == 7 && strncasecmp(v, "chunked", 7) == 0))
        return fail(h, 501, "Unsupported Transfer-Encoding");
      v = comma ? comma + 1 : end;
    }
  }
  return 0;
}

/* The router's index (ml_method_index) of each llhttp method, -1 for those it has none
 * for: made once with the settings. */
#define ML_LLHTTP_METHODS 64
static signed char method_index[ML_LLHTTP_METHODS];

static int on_headers_complete(llhttp_t *p) {
  ml_http_t *h = H(p);
  h->method_name = llhttp_method_name((llhttp_method_t)p->method);
  h->method = p->method < ML_LLHTTP_METHODS ? method_index[p->method] : -1;
  if (p->method == HTTP_CONNECT) return fail(h, 400, "CONNECT is not supported");
  /* RFC 9112 3.2.4: the asterisk-form is only for OPTIONS */
  if (h->url_len == 1 && ml_http_url(h)[0] == '*' && p->method != HTTP_OPTIONS)
    return fail(h, 400, "Request target * is only for OPTIONS");
  if (check_host(h, p)) return HPE_USER;
  if ((p->flags & F_CHUNKED) && check_transfer_codings(h)) return HPE_USER;
  int body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length);
  if (body && h->on_body_head) {
    const char *detail = NULL;
    int status = h->on_body_head(h, &detail);
    if (status) return fail(h, status, detail);
  }
  if ((p->flags & F_CONTENT_LENGTH) && p->content_length > h->max_body)
    return fail(h, 413, "Request Entity Too Large");
  size_t vlen;
  const char *v = h->has_expect ? ml_http_header(h, "expect", &vlen) : NULL;
  if (v && p->http_major == 1 && p->http_minor >= 1) {
    if (vlen == 12 && strncasecmp(v, "100-continue", 12) == 0) h->expect_continue = 1;
    else return fail(h, 417, "Expectation Failed");
  }
  h->headers_done = 1;
  if (h->on_headers) h->on_headers(h);
  return 0;
}

/* 1 if `more` body bytes (data or chunk extensions) would take the body past max_body. */
static int body_over(const ml_http_t *h, size_t more) {
  return h->body_bytes + h->chunk_ext_bytes + more > h->max_body;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ml_http_t *h = H(p);
  if (body_over(h, len)) return fail(h, 413, "Request Entity Too Large");
  h->body_bytes += len;
  if (!h->upload) {
    ml_buf_add(&h->body, at, len);
    return 0;
  }
  const char *detail;
  int status = ml_upload_feed(h->upload, at, len, &detail);
  return status ? fail(h, status, detail) : 0;
}

/* Chunk extensions (names and values alike) are dropped, but not read without end. */
static int on_chunk_extension(llhttp_t *p, const char *at, size_t len) {
  ml_http_t *h = H(p);
  (void)at;
  if (body_over(h, len)) return fail(h, 413, "Request Entity Too Large");
  h->chunk_ext_bytes += len;
  h->chunk_line_ext_bytes += len;
  if (h->chunk_line_ext_bytes > MAX_CHUNK_EXT) return fail(h, 413, "Chunk extensions too large");
  return 0;
}

/* A chunk line is complete (extensions included): the next one starts from zero. */
static int on_chunk_header(llhttp_t *p) {
  H(p)->chunk_line_ext_bytes = 0;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  ml_http_t *h = H(p);
  if (h->upload) {
    const char *detail;
    int status = ml_upload_finish(h->upload, &detail);
    if (status) return fail(h, status, detail);
  }
  h->keepalive = llhttp_should_keep_alive(p);
  h->in_message = 0;
  return HPE_PAUSED;
}

static llhttp_settings_t settings;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void settings_init(void) {   /* once per process: hosts on other threads read them */
  memset(method_index, -1, sizeof method_index);
#define ML_METHOD_ROW(num, name, string)                                                  \
  if (num < ML_LLHTTP_METHODS) method_index[num] = (signed char)ml_method_index(#string, strlen(#string));
  HTTP_METHOD_MAP(ML_METHOD_ROW)
#undef ML_METHOD_ROW
  llhttp_settings_init(&settings);
  settings.on_message_begin = on_message_begin;
  settings.on_url = on_url;
  settings.on_version_complete = on_version_complete;
  settings.on_header_field = on_header_field;
  settings.on_header_value = on_header_value;
  settings.on_header_value_complete = on_header_value_complete;
  settings.on_headers_complete = on_headers_complete;
  settings.on_body = on_body;
  settings.on_chunk_extension_name = on_chunk_extension;
  settings.on_chunk_extension_value = on_chunk_extension;
  settings.on_chunk_header = on_chunk_header;
  settings.on_message_complete = on_message_complete;
}

void ml_http_init(ml_http_t *h, size_t max_header, size_t max_body, void *owner) {
  pthread_once(&settings_once, settings_init);
  memset(h, 0, sizeof *h);
  llhttp_init(&h->parser, HTTP_REQUEST, &settings);
  h->parser.data = h;
  h->parser.lenient_flags |= LENIENT_VERSION;   /* llhttp 8.1 has no setter for this one */
  h->max_header = max_header;
  h->max_body = h->max_body_default = max_body;
  h->owner = owner;
  h->method = -1;
}

void ml_http_drop_upload(ml_http_t *h) {
  ml_upload_free(h->upload);
  h->upload = NULL;
}

void ml_http_free(ml_http_t *h) {
  ml_http_drop_upload(h);
  ml_headers_free(&h->headers);
  ml_buf_free(&h->body);
}

int ml_http_execute(ml_http_t *h, const char *data, size_t len, size_t *used) {
  llhttp_errno_t err = llhttp_get_errno(&h->parser);
  if (err == HPE_PAUSED) llhttp_resume(&h->parser);
  /* Upgrade requests are answered as plain requests; the connection stays HTTP/1.1. */
  else if (err == HPE_PAUSED_UPGRADE) llhttp_resume_after_upgrade(&h->parser);
  err = llhttp_execute(&h->parser, data, len);
  if (err == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&h->parser);
    err = llhttp_execute(&h->parser, data, len);
  }
  if (err == HPE_OK) {
    *used = len;
    return ML_HTTP_MORE;
  }
  if (err == HPE_PAUSED) {
    *used = (size_t)(llhttp_get_error_pos(&h->parser) - data);
    return ML_HTTP_REQUEST;
  }
  *used = len;
  ml_http_drop_upload(h);   /* the body is abandoned: its files go now */
  /* our own verdict (413, 431, ...) wins: llhttp reports callback failures its own way */
  if (!h->error_status) {
    h->error_status = 400;
    h->error_detail = "Bad Request";
  }
  return ML_HTTP_ERROR;
}

const char *ml_http_header(const ml_http_t *h, const char *name, size_t *len) {
  return ml_headers_get(&h->headers, name, len);
}

/* RFC 3986 2.2, 2.3: the characters a reg-name holds besides %XX (unreserved and
 * sub-delims). Every request's Host goes through this, a byte at a time: one load each. */
static const unsigned char reg_char[256] = {
    ['0' ... '9'] = 1, ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['-'] = 1, ['.'] = 1, ['_'] = 1,
    ['~'] = 1, ['!'] = 1, ['$'] = 1, ['&'] = 1, ['\''] = 1, ['('] = 1, [')'] = 1, ['*'] = 1,
    ['+'] = 1, [','] = 1, [';'] = 1, ['='] = 1,
};

static int unreserved_or_sub_delim(char c) {
  return reg_char[(unsigned char)c];
}

static int reg_name_ok(const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '%') {
      if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2]))
        return 0;
      i += 2;
    } else if (!unreserved_or_sub_delim(s[i])) {
      return 0;
    }
  }
  return 1;
}

/* The inside of "[...]": an IPv6 address or "v" 1*HEXDIG "." 1*(unreserved / sub-delims / ":"). */
static int ip_literal_ok(const char *s, size_t len) {
  if (len > 0 && (s[0] == 'v' || s[0] == 'V')) {
    size_t i = 1;
    while (i < len && isxdigit((unsigned char)s[i])) i++;
    if (i == 1 || i + 1 >= len || s[i] != '.') return 0;
    for (i++; i < len; i++)
      if (s[i] != ':' && !unreserved_or_sub_delim(s[i])) return 0;
    return 1;
  }
  char text[INET6_ADDRSTRLEN];
  struct in6_addr addr;
  if (len >= sizeof text) return 0;
  memcpy(text, s, len);
  text[len] = '\0';
  return inet_pton(AF_INET6, text, &addr) == 1;
}

int ml_http_host_ok(const char *s, size_t len) {
  size_t host_len;
  if (len > 0 && s[0] == '[') {
    const char *end = memchr(s, ']', len);
    if (!end || !ip_literal_ok(s + 1, (size_t)(end - s) - 1)) return 0;
    host_len = (size_t)(end - s) + 1;
  } else {   /* a reg-name, which covers IPv4address, never holds ':' */
    const char *colon = memchr(s, ':', len);
    host_len = colon ? (size_t)(colon - s) : len;
    if (!reg_name_ok(s, host_len)) return 0;
  }
  if (host_len == len) return 1;
  if (s[host_len] != ':') return 0;
  for (size_t i = host_len + 1; i < len; i++)   /* port = *DIGIT */
    if (s[i] < '0' || s[i] > '9') return 0;
  return 1;
}
