/* A streaming multipart/form-data parser (RFC 7578, RFC 2046 5.1): fed the body in pieces
 * of any size as they arrive, it calls back at each part's start (with its name, filename
 * and content type), for each slice of the part's content, and at its end. It never holds
 * a part's content: only one part's header block (at most ML_MULTIPART_MAX_HEAD bytes).
 * It does no I/O and knows nothing of files or Lua (upload.c does both).
 *
 * Strict framing: delimiters and header lines end in CRLF; text before the first
 * delimiter (preamble) and after the close delimiter (epilogue) is ignored, as RFC 2046
 * says. Every part needs a Content-Disposition with a name. */
#ifndef ML_MULTIPART_H
#define ML_MULTIPART_H
#include "buf.h"
#include <stddef.h>

#define ML_MULTIPART_MAX_BOUNDARY 70     /* RFC 2046 5.1.1 */
#define ML_MULTIPART_MAX_HEAD (16 << 10) /* one part's header block */

/* A part's headers as the callbacks see them; the strings are NUL-terminated, decoded
 * (quotes and backslash escapes removed; filename* percent-decoded) and valid only during
 * the part_begin call. filename is NULL for a text field. */
typedef struct {
  const char *name;
  const char *filename;
  const char *content_type;   /* "text/plain" when the part has none (RFC 7578 4.4) */
} ml_multipart_part_t;

/* The callbacks return 0 to go on, or -1 to stop: ml_multipart_feed then returns -1 and
 * the callee says why on its own side. */
typedef struct {
  int (*part_begin)(void *ud, const ml_multipart_part_t *part);
  int (*part_data)(void *ud, const char *p, size_t n);
  int (*part_end)(void *ud);
} ml_multipart_cbs_t;

typedef struct {
  /* private */
  ml_multipart_cbs_t cbs;
  void *ud;
  char delim[4 + ML_MULTIPART_MAX_BOUNDARY];   /* "\r\n--" boundary */
  size_t dlen;
  size_t matched;            /* bytes of delim matched at the end of the last feed */
  int state;
  ml_buf_t head;             /* the part's header block so far */
  size_t line_off;           /* where its line being read starts */
  ml_buf_t fields;           /* its name, filename and content type, decoded */
  /* read-only: why feed or finish returned -1 (a 400's detail, a static string); NULL
   * when a callback stopped it */
  const char *error;
} ml_multipart_t;

/* Reads a Content-Type value: 1 if it names multipart/form-data (any case; parameters may
 * follow), else 0. For one that does, its boundary parameter (unquoted) replaces the
 * contents of `boundary`, which stays empty when there is none, or one that is empty or
 * longer than 70 bytes. */
int ml_multipart_content_type(const char *value, size_t len, ml_buf_t *boundary);

/* Starts a parser for boundary (1..70 bytes); cbs are called with ud. */
void ml_multipart_init(ml_multipart_t *mp, const char *boundary, size_t blen,
                       const ml_multipart_cbs_t *cbs, void *ud);
/* Parses the next len bytes of the body. Returns 0, or -1: malformed (mp->error) or
 * stopped by a callback; feed no more then. */
int ml_multipart_feed(ml_multipart_t *mp, const char *data, size_t len);
/* The body ended: returns 0 if the close delimiter was seen, else -1 (mp->error). */
int ml_multipart_finish(ml_multipart_t *mp);
void ml_multipart_free(ml_multipart_t *mp);
#endif
