/* The multipart/form-data parser (core/http/multipart.c). The input's first line is a
 * Content-Type value (its boundary parameter names the boundary), the rest is the body.
 * The body is parsed whole, then in pieces cut where a hash of the input says, then one
 * byte at a time: every way gives the same events and the same verdict, and the events
 * come in order (data and end only inside a part). */
#include "fuzz.h"
#include "multipart.h"
#include <string.h>

typedef struct {
  ml_buf_t log;
  int in_part;
} events_t;

static int on_begin(void *ud, const ml_multipart_part_t *p) {
  events_t *e = ud;
  FUZZ_CHECK(!e->in_part, "a part began inside a part");
  FUZZ_CHECK(p->name && p->content_type, "a part without name or type");
  e->in_part = 1;
  ml_buf_addc(&e->log, '[');
  ml_buf_addstr(&e->log, p->name);
  ml_buf_addc(&e->log, '|');
  ml_buf_addstr(&e->log, p->filename ? p->filename : "-");
  ml_buf_addc(&e->log, '|');
  ml_buf_addstr(&e->log, p->content_type);
  ml_buf_addc(&e->log, ']');
  return 0;
}

static int on_data(void *ud, const char *p, size_t n) {
  events_t *e = ud;
  FUZZ_CHECK(e->in_part, "data outside a part");
  ml_buf_add(&e->log, p, n);
  return 0;
}

static int on_end(void *ud) {
  events_t *e = ud;
  FUZZ_CHECK(e->in_part, "an end outside a part");
  e->in_part = 0;
  ml_buf_addstr(&e->log, "{end}");
  return 0;
}

static const ml_multipart_cbs_t cbs = { on_begin, on_data, on_end };

/* Parses body in pieces of at most `step` bytes (0: whole), the sizes varied by seed.
 * Returns the events (caller frees) and the error in *error (NULL: parsed). */
static ml_buf_t parse(const ml_buf_t *boundary, const char *body, size_t len, size_t step,
                      uint32_t seed, const char **error) {
  events_t e = {0};
  ml_multipart_t mp;
  ml_multipart_init(&mp, boundary->data, boundary->len, &cbs, &e);
  int rc = 0;
  size_t off = 0;
  while (rc == 0 && off < len) {
    size_t n = len - off;
    if (step) {
      seed = seed * 1103515245u + 12345u;
      size_t cut = 1 + (seed >> 16) % step;
      if (cut < n) n = cut;
    }
    /* each piece in a buffer of its own size: an over-read is seen */
    char *piece = malloc(n);
    memcpy(piece, body + off, n);
    rc = ml_multipart_feed(&mp, piece, n);
    free(piece);
    off += n;
  }
  if (rc == 0) rc = ml_multipart_finish(&mp);
  *error = rc ? mp.error : NULL;
  FUZZ_CHECK(rc == 0 || mp.error, "failed without a reason");
  ml_multipart_free(&mp);
  return e.log;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *p = (const char *)data, *nl = memchr(p, '\n', size);
  if (!nl) return 0;
  ml_buf_t boundary = {0};
  if (!ml_multipart_content_type(p, (size_t)(nl - p), &boundary) || !boundary.len) {
    ml_buf_free(&boundary);
    return 0;
  }
  FUZZ_CHECK(boundary.len <= ML_MULTIPART_MAX_BOUNDARY, "boundary of %zu", boundary.len);
  const char *body = nl + 1;
  size_t len = size - (size_t)(body - p);
  uint32_t seed = 2166136261u;
  for (size_t i = 0; i < size; i++) seed = (seed ^ data[i]) * 16777619u;
  const char *e1, *e2, *e3;
  ml_buf_t whole = parse(&boundary, body, len, 0, seed, &e1);
  ml_buf_t pieces = parse(&boundary, body, len, 97, seed, &e2);
  ml_buf_t bytes = parse(&boundary, body, len, 1, seed, &e3);
  FUZZ_CHECK(e1 == e2 && e2 == e3, "verdicts differ: %s / %s / %s", e1 ? e1 : "ok",
             e2 ? e2 : "ok", e3 ? e3 : "ok");
  /* after an error the events so far depend on where the pieces ended: compare only
   * complete parses */
  if (!e1) {
    FUZZ_CHECK(whole.len == pieces.len && whole.len == bytes.len &&
               (!whole.len || (memcmp(whole.data, pieces.data, whole.len) == 0 &&
                               memcmp(whole.data, bytes.data, whole.len) == 0)),
               "events differ by how the body was cut");
  }
  ml_buf_free(&whole);
  ml_buf_free(&pieces);
  ml_buf_free(&bytes);
  ml_buf_free(&boundary);
  return 0;
}
