/* Writing HTTP/1.1 responses into a connection's output buffer.
 * ml_resp_begin .. ml_resp_header* .. ml_resp_end, then the body bytes. */
#ifndef ML_RESPONSE_H
#define ML_RESPONSE_H
#include "buf.h"

const char *ml_status_reason(int status);

/* "HTTP/1.1 200 OK", Server and Date. */
void ml_resp_begin(ml_buf_t *out, int status);
/* ml_resp_begin in two steps, for a head whose Server or Date may come from elsewhere:
 * the status line alone, then Server: moonlet and Date, leaving out those in `given`. */
enum { ML_RESP_SERVER = 1, ML_RESP_DATE = 2 };
void ml_resp_status(ml_buf_t *out, int status);
void ml_resp_defaults(ml_buf_t *out, unsigned given);
void ml_resp_header(ml_buf_t *out, const char *name, size_t nlen, const char *val, size_t vlen);
/* Content-Length (unless the status forbids a body), Connection when closing, blank line. */
void ml_resp_end(ml_buf_t *out, int status, size_t content_length, int keepalive);

/* A complete `{"detail": detail}` JSON response; `allow` adds an Allow header if not NULL. */
void ml_resp_error(ml_buf_t *out, int status, const char *detail, const char *allow,
                   int keepalive, int head);

/* 1 if a header name is a valid token, and if the value has no control character but tabs
 * (CR, LF, NUL, DEL, ...). */
int ml_header_name_ok(const char *s, size_t len);
int ml_header_value_ok(const char *s, size_t len);
#endif
