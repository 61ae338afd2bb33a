/* One access log line per request (access_log.c): text, the line moonlet always wrote
 * extended, or JSON, one object a line. Where it goes is the log's (ml_log_access). */
#ifndef ML_ACCESS_LOG_H
#define ML_ACCESS_LOG_H
#include "buf.h"
#include <stdint.h>

enum { ML_ACCESS_OFF, ML_ACCESS_TEXT, ML_ACCESS_JSON };

typedef struct {
  const char *method;        /* "-" when the request line never parsed */
  const char *url;           /* path with query, url_len bytes */
  size_t url_len;
  int status;                /* 499: the client left before its response was written */
  uint64_t bytes;            /* response bytes, head included */
  double ms;                 /* from the request's first byte read to its last written */
  const char *client;        /* "1.2.3.4:5678", "-" for none */
  const char *ua;            /* User-Agent, ua_len bytes (NULL: none) */
  size_t ua_len;
  const char *id;            /* the request id (NULL: none), id_len bytes */
  size_t id_len;
  const char *detail;        /* why a request was refused before its handler (NULL: none) */
  size_t detail_len;
} ml_access_t;

/* "text" -> ML_ACCESS_TEXT, "json", "off"; -1 if unknown. */
int ml_access_parse(const char *name);
/* A worker process of --workers (core/prod/worker.c) gives its slot: JSON lines then carry
 * "worker":N (text lines carry the log's "[worker N]" tag). Set before any thread logs. */
void ml_access_set_worker(int slot);
/* Formats r as one line and hands it to the log (ml_log_access). */
void ml_access_write(int format, const ml_access_t *r);
#endif
