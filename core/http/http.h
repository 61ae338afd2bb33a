/* HTTP/1.x request parsing: llhttp glue. Parsed fields are copied out of the read buffer
 * into the request's own store as they arrive (llhttp hands them over in pieces), so the
 * read buffer can be reused at once. One ml_http_t per connection, reused per request. */
#ifndef ML_HTTP_H
#define ML_HTTP_H
#include "buf.h"
#include "headers.h"
#include "upload.h"
#include <llhttp.h>
#include <stdint.h>

enum { ML_HTTP_MORE, ML_HTTP_REQUEST, ML_HTTP_ERROR };

typedef struct ml_http_s ml_http_t;
typedef void (*ml_http_event_cb)(ml_http_t *h);
/* Returns 0, or an HTTP status that refuses the request, with a static *detail. */
typedef int (*ml_http_body_cb)(ml_http_t *h, const char **detail);

struct ml_http_s {
  llhttp_t parser;
  ml_headers_t headers;          /* its store holds the url first, then the headers */
  ml_buf_t body;                 /* the body, unless an upload takes it */
  ml_upload_t *upload;           /* takes the body as it arrives (see on_body_head) */
  size_t body_bytes;             /* the body's so far, wherever it went */
  int method;                    /* ML_M_* or -1 for methods moonlet has no routes for */
  const char *method_name;       /* static string */
  int keepalive;                 /* llhttp's verdict at message end */
  int expect_continue;           /* "Expect: 100-continue" on an HTTP/1.1 request */
  int in_message;                /* between message begin and complete */
  int headers_done;
  unsigned char hosts;           /* Host headers seen (up to 2: one too many is enough) */
  unsigned char has_expect;      /* an Expect header was seen */
  size_t header_bytes;           /* the header block's, then its trailers' */
  size_t chunk_ext_bytes;        /* chunk extensions of the body: they count toward max_body */
  size_t chunk_line_ext_bytes;   /* those of the current chunk line */
  size_t max_body;               /* this request's body limit (on_body_head may change it) */
  size_t max_body_default, max_header;
  int error_status;              /* 400, 413, 417, 431, 501, 505 after ML_HTTP_ERROR */
  uint32_t url_len;              /* the url starts at store offset 0 */
  const char *error_detail;
  void *owner;                   /* the connection */
  ml_http_event_cb on_begin;     /* first byte of a request */
  ml_http_event_cb on_headers;   /* header block complete (100-continue, timers) */
  /* a body follows the header block just read: set this request's max_body and upload
   * before any of the body is read (and before the Content-Length check, 100 Continue) */
  ml_http_body_cb on_body_head;
};

void ml_http_init(ml_http_t *h, size_t max_header, size_t max_body, void *owner);
void ml_http_free(ml_http_t *h);

/* Feeds bytes. Returns ML_HTTP_MORE when all were consumed without finishing a request,
 * ML_HTTP_REQUEST when a request is complete (the parser stays paused on it until the next
 * call; *used tells how many bytes belonged to it), ML_HTTP_ERROR when the input is bad
 * (h->error_status and h->error_detail say how to answer; the connection must close). */
int ml_http_execute(ml_http_t *h, const char *data, size_t len, size_t *used);

/* The upload that took the request's body, now the caller's (NULL if none). */
static inline ml_upload_t *ml_http_take_upload(ml_http_t *h) {
  ml_upload_t *up = h->upload;
  h->upload = NULL;
  if (up) ml_upload_detach(up);
  return up;
}
/* Frees the body's upload, if any (the connection is closing). */
void ml_http_drop_upload(ml_http_t *h);

/* Finds a header by lower-case name; NULL if absent. */
const char *ml_http_header(const ml_http_t *h, const char *name, size_t *len);

/* 1 if `s` is a valid Host value (RFC 9110 7.2, RFC 3986 3.2.2): a reg-name, an IPv4
 * address or an [IP-literal], then an optional ":" port; empty is valid. */
int ml_http_host_ok(const char *s, size_t len);

static inline const char *ml_http_url(const ml_http_t *h) { return h->headers.store.data; }
#endif
