/* Validators and ranges (see static_cond.h). */
#include "static_cond.h"
#include "httpdate.h"
#include <string.h>
#include <strings.h>

static int ows(char c) { return c == ' ' || c == '\t'; }

/* Weak comparison: equal opaque tags, W/ prefixes ignored. */
static int etag_weak_eq(const char *a, size_t alen, const char *b, size_t blen) {
  if (alen > 2 && a[0] == 'W' && a[1] == '/') a += 2, alen -= 2;
  if (blen > 2 && b[0] == 'W' && b[1] == '/') b += 2, blen -= 2;
  return alen == blen && memcmp(a, b, alen) == 0;
}

static int inm_matches(const char *s, size_t len, const char *etag, size_t etag_len) {
  const char *p = s, *end = s + len;
  while (p < end) {
    while (p < end && (ows(*p) || *p == ',')) p++;
    if (p == end) break;
    if (*p == '*') return 1;
    const char *tag = p;
    if (end - p > 2 && p[0] == 'W' && p[1] == '/') p += 2;
    if (p == end || *p != '"') return 0;   /* malformed: no match */
    const char *close = memchr(p + 1, '"', (size_t)(end - p - 1));
    if (!close) return 0;
    p = close + 1;
    if (etag_weak_eq(tag, (size_t)(p - tag), etag, etag_len)) return 1;
  }
  return 0;
}

int ml_static_not_modified(const char *inm, size_t inm_len, const char *ims, size_t ims_len,
                           const char *etag, size_t etag_len, time_t mtime) {
  if (inm) return inm_matches(inm, inm_len, etag, etag_len);
  time_t since;
  if (ims && ml_httpdate_parse(ims, ims_len, &since) == 0) return mtime <= since;
  return 0;
}

/* If-Range: the range applies only to the version it names, by a strong entity tag or by
 * its exact Last-Modified date. */
static int if_range_holds(const char *s, size_t len, const char *etag, size_t etag_len,
                          time_t mtime) {
  if (len > 0 && (s[0] == '"' || s[0] == 'W')) {
    return s[0] == '"' && len == etag_len && memcmp(s, etag, len) == 0 && etag[0] == '"';
  }
  time_t t;
  return ml_httpdate_parse(s, len, &t) == 0 && t == mtime;
}

/* Reads decimal digits into *v; 0 if there is none or the number overflows. */
static int number(const char **p, const char *end, uint64_t *v) {
  const char *start = *p;
  *v = 0;
  while (*p < end && **p >= '0' && **p <= '9') {
    if (*v > (UINT64_MAX - 9) / 10) return 0;
    *v = *v * 10 + (uint64_t)(**p - '0');
    (*p)++;
  }
  return *p > start;
}

int ml_static_range(const char *range, size_t range_len, const char *if_range, size_t ir_len,
                    const char *etag, size_t etag_len, time_t mtime, uint64_t size,
                    uint64_t *first, uint64_t *last) {
  if (!range) return 200;
  if (if_range && !if_range_holds(if_range, ir_len, etag, etag_len, mtime)) return 200;
  const char *p = range, *end = range + range_len;
  if (range_len < 6 || strncasecmp(p, "bytes=", 6) != 0) return 200;
  p += 6;
  while (p < end && ows(*p)) p++;
  uint64_t a = 0, b = 0;
  int has_a = number(&p, end, &a);
  if (p == end || *p != '-') return 200;
  p++;
  int has_b = number(&p, end, &b);
  while (p < end && ows(*p)) p++;
  if (p != end) return 200;   /* several ranges (or junk): the whole file */
  if (!has_a) {               /* "-n": the last n bytes */
    if (!has_b || b == 0 || size == 0) return has_b ? 416 : 200;
    *first = b >= size ? 0 : size - b;
    *last = size - 1;
    return 206;
  }
  if (has_b && b < a) return 200;   /* invalid: ignored */
  if (a >= size) return 416;
  *first = a;
  *last = has_b && b < size - 1 ? b : size - 1;
  return 206;
}
