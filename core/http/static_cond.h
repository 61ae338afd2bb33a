/* What a request's validators and Range ask of a file (RFC 9110 13 and 14), decided from
 * its ETag, modification time and size alone: pure functions, no I/O. */
#ifndef ML_STATIC_COND_H
#define ML_STATIC_COND_H
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* 1 when a GET or HEAD is answered 304: If-None-Match (a list of entity tags, or "*")
 * holds one that matches etag weakly; without If-None-Match, If-Modified-Since is a date
 * not older than mtime (seconds). NULL for an absent header. */
int ml_static_not_modified(const char *inm, size_t inm_len, const char *ims, size_t ims_len,
                           const char *etag, size_t etag_len, time_t mtime);

/* The status for a Range request: 200 (no Range, one that does not apply (If-Range names
 * another version), one we do not parse, or several ranges: the whole file is sent),
 * 206 with the first and last byte in *first and *last, or 416 (no byte of the range is in
 * the file). Only "bytes=" ranges; a single `a-b`, `a-` or `-n`. */
int ml_static_range(const char *range, size_t range_len, const char *if_range, size_t ir_len,
                    const char *etag, size_t etag_len, time_t mtime, uint64_t size,
                    uint64_t *first, uint64_t *last);
#endif
