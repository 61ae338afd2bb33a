/* An upload: a multipart/form-data request body taken as it arrives (multipart.h parses
 * it), never whole in memory. Text fields are kept (ML_UPLOAD_MAX_TEXT bytes in all); each
 * file part is streamed to a temporary file of its own ($TMPDIR or /tmp,
 * moonlet-upload-XXXXXX) with libuv's fs writes, one at a time in order. While more than
 * ML_UPLOAD_HIGH_WATER bytes wait for the disk, the upload asks its reader to stop reading
 * (hold) and lets it go on once the writes have caught up: memory stays bounded whatever
 * the body's size and however slow the disk.
 *
 * The result is the list of fields in copy.h's packed form, name then value for each part
 * in order: a string for a text field, { filename, content_type, size, path } for a file,
 * so the same bytes make req:form() on the loop and travel as they are to a pool thread.
 *
 * Ownership: the connection's parser holds an upload while the body arrives; the request
 * (or the pooled job) that runs the route takes it over; whoever holds it last frees it,
 * which removes its files (a handler that moved one away is fine). Its memory goes when
 * its last write has returned, so it may be freed at any time. */
#ifndef ML_UPLOAD_H
#define ML_UPLOAD_H
#include <stddef.h>
#include <uv.h>

#define ML_UPLOAD_MAX_TEXT (1u << 20)      /* bytes of text fields, in all -> 413 */
#define ML_UPLOAD_MAX_PARTS 1000           /* parts in one body -> 400 */
#define ML_UPLOAD_HIGH_WATER (256u << 10)  /* bytes waiting for the disk: hold reading */

typedef struct ml_upload_s ml_upload_t;

/* hold(arg, 1): stop reading the body for now; hold(arg, 0): read on. */
typedef void (*ml_upload_hold_fn)(void *arg, int on);
typedef void (*ml_upload_flushed_fn)(void *arg);

/* A new upload for a body with this boundary (1..70 bytes), writing on loop. */
ml_upload_t *ml_upload_new(uv_loop_t *loop, const char *boundary, size_t blen,
                           ml_upload_hold_fn hold, void *arg);
/* The next body bytes. Returns 0, or an HTTP status with a static *detail (400 malformed
 * or too many parts, 413 text fields too large, 500 a file could not be written; logged):
 * then feed no more. */
int ml_upload_feed(ml_upload_t *up, const char *p, size_t n, const char **detail);
/* The body is complete: 0, or 400 (malformed: no final boundary) with *detail. */
int ml_upload_finish(ml_upload_t *up, const char **detail);
/* The body is read: no more hold calls (if it held, it lets go first). */
void ml_upload_detach(ml_upload_t *up);
/* After finish: 0 if every file is on disk (cb is not called), or 1: cb(arg) is called once
 * when they are, or when a write failed (ml_upload_failed). cb may free the upload. */
int ml_upload_wait(ml_upload_t *up, ml_upload_flushed_fn cb, void *arg);
void ml_upload_wait_cancel(ml_upload_t *up);
/* 1 if a file could not be written (logged): the request cannot be served. */
int ml_upload_failed(const ml_upload_t *up);
/* The packed fields (see the top comment) and their count. */
const char *ml_upload_fields(const ml_upload_t *up, size_t *len, int *count);
/* Removes the files and frees the upload (see the top comment). NULL does nothing. */
void ml_upload_free(ml_upload_t *up);
#endif
