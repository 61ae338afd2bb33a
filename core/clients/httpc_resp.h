/* The HTTP client's response reader: llhttp in response mode with the client's limits and
 * messages, collecting one response's status, headers and body. No I/O, no Lua: httpc.c
 * feeds it what a connection reads; fuzz/httpc_response.c feeds it anything.
 *
 * Results: ml_httpc_resp_feed and ml_httpc_resp_eof return ML_HTTPC_RESP_MORE (no final
 * response yet), ML_HTTPC_RESP_DONE (a final response is complete: status in
 * r->parser.status_code, headers, body) or ML_HTTPC_RESP_ERROR (r->err says why, with the
 * label). Interim responses (1xx but 101) are read and dropped. */
#ifndef ML_HTTPC_RESP_H
#define ML_HTTPC_RESP_H
#include "buf.h"
#include "headers.h"
#include <llhttp.h>
#include <stdint.h>

enum { ML_HTTPC_RESP_MORE, ML_HTTPC_RESP_DONE, ML_HTTPC_RESP_ERROR };

#define ML_HTTPC_MAX_HEADER_BYTES (64 * 1024)

typedef struct {
  /* private */
  llhttp_t parser;
  int head;                  /* the request was HEAD: no body, whatever the headers say */
  size_t max_size;           /* body limit */
  const char *label;         /* "GET http://..." for messages, borrowed */
  /* read-only: the response so far */
  int got_bytes, headers_done, complete, has_length;
  uint64_t expected;         /* Content-Length, when has_length */
  ml_headers_t headers;
  size_t header_bytes;
  ml_buf_t body;
  char err[512];
} ml_httpc_resp_t;

/* label must outlive r. */
void ml_httpc_resp_init(ml_httpc_resp_t *r, int head, size_t max_size, const char *label);
/* Forgets what was read (a request sent again), keeping the buffers. */
void ml_httpc_resp_reset(ml_httpc_resp_t *r);
/* Reads len bytes. On DONE, *clean says whether the response ended exactly at data + len
 * (no byte after it: the connection may be reused). */
int ml_httpc_resp_feed(ml_httpc_resp_t *r, const char *data, size_t len, int *clean);
/* The connection closed after what was fed: DONE if that ends a body delimited by the
 * close, else ERROR saying how far the response got ("closed: ..."). */
int ml_httpc_resp_eof(ml_httpc_resp_t *r);
/* 1 if the server keeps the connection open after this (complete) response. */
int ml_httpc_resp_keepalive(const ml_httpc_resp_t *r);
void ml_httpc_resp_free(ml_httpc_resp_t *r);
#endif
