/* The streaming multipart/form-data parser (see multipart.h). The body is a preamble, then
 * parts, each opened by a delimiter line and made of a header block and content, then a
 * close delimiter and an epilogue:
 *
 *   preamble CRLF "--" boundary pad CRLF headers CRLF content CRLF "--" boundary "--" ...
 *
 * Content is searched for the delimiter CRLF "--" boundary as it streams by: `matched`
 * counts the bytes of it seen at the end of the input so far, so a delimiter split
 * across feeds (down to one byte per feed) is found, and nothing of the content is kept.
 * The delimiter holds CR only in its first byte (a boundary has no CR: its bytes are
 * checked), so after a mismatch at byte k the k bytes matched are content and matching
 * starts over at the byte that did not match. The body's very start counts as a CRLF,
 * so a body may open with "--" boundary and no preamble. */
#include "multipart.h"
#include <strings.h>

enum {
  S_PREAMBLE,     /* before the first delimiter: ignored */
  S_AFTER_DELIM,  /* a delimiter ended: "--" (the last one), padding or CRLF follow */
  S_CLOSE_DASH,   /* "-" seen after a delimiter: the second one closes the body */
  S_PADDING,      /* spaces or tabs after a delimiter, before its CRLF */
  S_DELIM_LF,     /* CR seen after a delimiter */
  S_HEADERS,      /* a part's header block, up to its empty line */
  S_CONTENT,      /* a part's content, up to the next delimiter */
  S_EPILOGUE,     /* after the close delimiter: ignored */
  S_ERROR
};

static int is_ows(char c) { return c == ' ' || c == '\t'; }

static int fail(ml_multipart_t *mp, const char *why) {
  mp->state = S_ERROR;
  mp->error = why;
  return -1;
}

/* --- header values and their parameters ------------------------------------------------ */

/* Reads the next parameter (`; name=value`) of a header value from *p (which starts after
 * the value's first token). Sets its name (a slice of the input) and appends its value,
 * unquoted, to out. Returns 1 for a parameter, 0 at the end, -1 for an unterminated quoted
 * string. A parameter without "=" is skipped. */
static int next_param(const char **p, const char *end, const char **name, size_t *nlen,
                      ml_buf_t *out) {
  const char *s = *p, *n;
  for (;;) {
    while (s < end && (is_ows(*s) || *s == ';')) s++;
    if (s == end) {
      *p = s;
      return 0;
    }
    n = s;
    while (s < end && *s != '=' && *s != ';') s++;
    if (s < end && *s == '=') break;
  }
  const char *nend = s;
  while (nend > n && is_ows(nend[-1])) nend--;
  *name = n;
  *nlen = (size_t)(nend - n);
  s++;   /* '=' */
  while (s < end && is_ows(*s)) s++;
  if (s < end && *s == '"') {   /* quoted-string, RFC 9110 5.6.4 */
    for (s++;; s++) {
      if (s == end) return -1;
      if (*s == '"') break;
      if (*s == '\\' && s + 1 < end) s++;
      ml_buf_addc(out, *s);
    }
    s++;
    while (s < end && *s != ';') s++;   /* anything after the closing quote is dropped */
  } else {
    const char *v = s;
    while (s < end && *s != ';') s++;
    const char *vend = s;
    while (vend > v && is_ows(vend[-1])) vend--;
    ml_buf_add(out, v, (size_t)(vend - v));
  }
  *p = s;
  return 1;
}

/* Skips a header value's first token (the media type, the disposition type). */
static const char *after_first_token(const char *s, const char *end) {
  const char *semi = memchr(s, ';', (size_t)(end - s));
  return semi ? semi : end;
}

static int name_is(const char *n, size_t len, const char *want) {
  return len == strlen(want) && strncasecmp(n, want, len) == 0;
}

int ml_multipart_content_type(const char *value, size_t len, ml_buf_t *boundary) {
  static const char type[] = "multipart/form-data";
  const char *s = value, *end = value + len;
  boundary->len = 0;
  while (s < end && is_ows(*s)) s++;
  size_t tlen = sizeof type - 1;
  if ((size_t)(end - s) < tlen || strncasecmp(s, type, tlen) != 0) return 0;
  s += tlen;
  while (s < end && is_ows(*s)) s++;
  if (s < end && *s != ';') return 0;   /* multipart/form-dataX */
  const char *name;
  size_t nlen;
  int rc;
  ml_buf_t v = {0};
  while ((rc = next_param(&s, end, &name, &nlen, &v)) == 1) {
    if (name_is(name, nlen, "boundary") && boundary->len == 0) {
      if (v.len >= 1 && v.len <= ML_MULTIPART_MAX_BOUNDARY && !memchr(v.data, '\r', v.len) &&
          !memchr(v.data, '\n', v.len))
        ml_buf_add(boundary, v.data, v.len);
    }
    v.len = 0;
  }
  ml_buf_free(&v);
  return 1;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Appends s percent-decoded to out (a bad escape stays as it is). */
static void add_pct_decoded(ml_buf_t *out, const char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 &&
        (lo = hexval(s[i + 2])) >= 0) {
      ml_buf_addc(out, (char)(hi * 16 + lo));
      i += 2;
    } else {
      ml_buf_addc(out, s[i]);
    }
  }
}

/* Appends a filename parameter's value v to out, NUL-terminated: filename* (RFC 5987:
 * charset'language'percent-encoded) is decoded, filename is taken as it is. */
static void add_filename(ml_buf_t *out, const ml_buf_t *v, int star) {
  if (!v->len) {   /* filename="": v->data may be NULL, no pointer arithmetic on it */
    ml_buf_addc(out, '\0');
    return;
  }
  const char *end = v->data + v->len;
  const char *q1 = star ? memchr(v->data, '\'', v->len) : NULL;
  const char *q2 = q1 ? memchr(q1 + 1, '\'', (size_t)(end - q1 - 1)) : NULL;
  if (q2) add_pct_decoded(out, q2 + 1, (size_t)(end - q2 - 1));
  else ml_buf_add(out, v->data, v->len);
  ml_buf_addc(out, '\0');
}

/* Reads a Content-Disposition value's name and filename parameters into mp->fields at
 * *name_off and *file_off (-1 when absent). Returns 0, or -1 if malformed. */
static int read_disposition(ml_multipart_t *mp, const char *s, const char *end,
                            long *name_off, long *file_off) {
  ml_buf_t v = {0};
  const char *pn;
  size_t pnlen;
  int rc, star = 0;
  s = after_first_token(s, end);
  while ((rc = next_param(&s, end, &pn, &pnlen, &v)) == 1) {
    if (name_is(pn, pnlen, "name") && *name_off < 0) {
      *name_off = (long)mp->fields.len;
      ml_buf_add(&mp->fields, v.data, v.len);
      ml_buf_addc(&mp->fields, '\0');
    } else if ((name_is(pn, pnlen, "filename") && *file_off < 0) ||
               (name_is(pn, pnlen, "filename*") && !star)) {   /* filename* wins */
      star = pn[pnlen - 1] == '*';
      *file_off = (long)mp->fields.len;
      add_filename(&mp->fields, &v, star);
    }
    v.len = 0;
  }
  ml_buf_free(&v);
  return rc;
}

/* A part's header block is complete in mp->head (its lines checked to end in CRLF, the
 * last one empty): finds its name, filename and content type and calls part_begin. */
static int begin_part(ml_multipart_t *mp) {
  const ml_buf_t *h = &mp->head;
  long name_off = -1, file_off = -1, ctype_off = -1;
  mp->fields.len = 0;
  size_t at = 0;
  while (at + 2 < h->len) {   /* each line but the final empty one */
    const char *line = h->data + at;
    const char *eol = memchr(line, '\r', h->len - at);
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    at = (size_t)(eol - h->data) + 2;
    if (!colon || colon == line || is_ows(line[0]))   /* obsolete line folding too */
      return fail(mp, "Malformed multipart body: a part header line has no name");
    const char *val = colon + 1, *vend = eol;
    while (val < vend && is_ows(*val)) val++;
    while (vend > val && is_ows(vend[-1])) vend--;
    size_t nlen = (size_t)(colon - line);
    if (name_is(line, nlen, "content-type") && ctype_off < 0) {
      ctype_off = (long)mp->fields.len;
      ml_buf_add(&mp->fields, val, (size_t)(vend - val));
      ml_buf_addc(&mp->fields, '\0');
    } else if (name_is(line, nlen, "content-disposition") && name_off < 0) {
      if (read_disposition(mp, val, vend, &name_off, &file_off))
        return fail(mp, "Malformed multipart body: unterminated quoted string in a part "
                        "header");
    }
  }
  if (name_off < 0)
    return fail(mp, "Malformed multipart body: a part has no name in its Content-Disposition");
  const char *f = mp->fields.data;
  ml_multipart_part_t part = {
      .name = f + name_off,
      .filename = file_off >= 0 ? f + file_off : NULL,
      .content_type = ctype_off >= 0 ? f + ctype_off : "text/plain",
  };
  if (mp->cbs.part_begin(mp->ud, &part)) return fail(mp, NULL);
  return 0;
}

/* --- the body -------------------------------------------------------------------------- */

void ml_multipart_init(ml_multipart_t *mp, const char *boundary, size_t blen,
                       const ml_multipart_cbs_t *cbs, void *ud) {
  memset(mp, 0, sizeof *mp);
  if (blen > ML_MULTIPART_MAX_BOUNDARY) blen = ML_MULTIPART_MAX_BOUNDARY;
  memcpy(mp->delim, "\r\n--", 4);
  memcpy(mp->delim + 4, boundary, blen);
  mp->dlen = 4 + blen;
  mp->matched = 2;   /* the body's start counts as a CRLF */
  mp->state = S_PREAMBLE;
  mp->cbs = *cbs;
  mp->ud = ud;
}

void ml_multipart_free(ml_multipart_t *mp) {
  ml_buf_free(&mp->head);
  ml_buf_free(&mp->fields);
}

/* Hands content to part_data (in S_CONTENT; the preamble is dropped). */
static int content(ml_multipart_t *mp, const char *p, size_t n) {
  if (n == 0 || mp->state != S_CONTENT) return 0;
  if (mp->cbs.part_data(mp->ud, p, n)) return fail(mp, NULL);
  return 0;
}

/* Searches data[0..len) for the delimiter, handing what precedes it to content. Returns
 * the bytes used: all of them, or up to the end of a delimiter (then the state has moved
 * on); -1 on error. */
static long scan(ml_multipart_t *mp, const char *data, size_t len) {
  const char *p = data, *end = data + len;
  while (p < end) {
    if (mp->matched == 0) {
      const char *cr = memchr(p, '\r', (size_t)(end - p));
      if (content(mp, p, (size_t)((cr ? cr : end) - p))) return -1;
      if (!cr) return (long)len;
      p = cr + 1;
      mp->matched = 1;
      continue;
    }
    if (*p == mp->delim[mp->matched]) {
      p++;
      if (++mp->matched == mp->dlen) {
        mp->matched = 0;
        if (mp->state == S_CONTENT && mp->cbs.part_end(mp->ud)) return fail(mp, NULL);
        mp->state = S_AFTER_DELIM;
        return (long)(p - data);
      }
      continue;
    }
    /* no delimiter after all: the bytes matched were content (see the top comment); the
     * body's virtual CRLF at the start never was */
    size_t k = mp->matched;
    mp->matched = 0;
    if (mp->state == S_CONTENT && content(mp, mp->delim, k)) return -1;
  }
  return (long)len;
}

/* Takes header bytes up to the empty line that ends the block. Returns the bytes used, -1
 * on error. */
static long headers(ml_multipart_t *mp, const char *data, size_t len) {
  const char *p = data, *end = data + len;
  ml_buf_t *h = &mp->head;
  while (p < end) {
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    const char *stop = lf ? lf + 1 : end;
    if (h->len + (size_t)(stop - p) > ML_MULTIPART_MAX_HEAD)
      return fail(mp, "Malformed multipart body: part headers too large");
    ml_buf_add(h, p, (size_t)(stop - p));
    p = stop;
    if (!lf) break;
    /* a line is complete: it ends in CRLF and holds no other CR */
    const char *line = h->data + mp->line_off;
    size_t n = h->len - mp->line_off;
    mp->line_off = h->len;
    if (n < 2 || line[n - 2] != '\r' || memchr(line, '\r', n - 2))
      return fail(mp, "Malformed multipart body: part header lines must end in CRLF");
    if (n == 2) {   /* the empty line */
      mp->state = S_CONTENT;
      if (begin_part(mp)) return -1;
      return (long)(p - data);
    }
  }
  return (long)(p - data);
}

int ml_multipart_feed(ml_multipart_t *mp, const char *data, size_t len) {
  const char *p = data, *end = data + len;
  while (p < end) {
    long used = 1;
    char c = *p;
    switch (mp->state) {
    case S_PREAMBLE:
    case S_CONTENT: used = scan(mp, p, (size_t)(end - p)); break;
    case S_HEADERS: used = headers(mp, p, (size_t)(end - p)); break;
    case S_EPILOGUE: return 0;
    case S_ERROR: return -1;
    case S_AFTER_DELIM:
      if (c == '-') mp->state = S_CLOSE_DASH;
      else if (is_ows(c)) mp->state = S_PADDING;
      else if (c == '\r') mp->state = S_DELIM_LF;
      else return fail(mp, "Malformed multipart body: unexpected bytes after a boundary");
      break;
    case S_CLOSE_DASH:
      if (c != '-') return fail(mp, "Malformed multipart body: unexpected bytes after a boundary");
      mp->state = S_EPILOGUE;
      break;
    case S_PADDING:
      if (c == '\r') mp->state = S_DELIM_LF;
      else if (!is_ows(c))
        return fail(mp, "Malformed multipart body: unexpected bytes after a boundary");
      break;
    case S_DELIM_LF:
      if (c != '\n') return fail(mp, "Malformed multipart body: unexpected bytes after a boundary");
      mp->state = S_HEADERS;
      mp->head.len = mp->line_off = 0;
      break;
    }
    if (used < 0) return -1;
    p += used;
  }
  return 0;
}

int ml_multipart_finish(ml_multipart_t *mp) {
  if (mp->state == S_EPILOGUE) return 0;
  if (mp->state == S_ERROR) return -1;
  return fail(mp, "Malformed multipart body: missing the final boundary");
}
