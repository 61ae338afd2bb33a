/* ml_buf_t: a growable byte buffer. Owned by whoever embeds it; ml_buf_free releases it.
 * Growth failure aborts: moonlet treats out-of-memory as fatal, like LuaJIT does. */
#ifndef ML_BUF_H
#define ML_BUF_H
#include "mem.h"
#include <stddef.h>
#include <string.h>

typedef struct {
  char *data;
  size_t len;
  size_t cap;
} ml_buf_t;

static inline void ml_buf_reserve(ml_buf_t *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra) cap *= 2;
  b->data = ml_xrealloc(b->data, cap);
  b->cap = cap;
}

static inline void ml_buf_add(ml_buf_t *b, const void *p, size_t n) {
  ml_buf_reserve(b, n);
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
}

static inline void ml_buf_addstr(ml_buf_t *b, const char *s) { ml_buf_add(b, s, strlen(s)); }

static inline void ml_buf_addc(ml_buf_t *b, char c) {
  ml_buf_reserve(b, 1);
  b->data[b->len++] = c;
}

/* Appends n bytes to room ml_buf_reserve made already. */
static inline void ml_buf_put(ml_buf_t *b, const void *p, size_t n) {
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

/* Appends the decimal form of v (at most 20 bytes) to room reserved already. */
static inline void ml_buf_putu(ml_buf_t *b, unsigned long long v) {
  char tmp[20];
  size_t i = sizeof tmp;
  do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
  ml_buf_put(b, tmp + i, sizeof tmp - i);
}

/* Appends the decimal form of v. */
static inline void ml_buf_addu(ml_buf_t *b, unsigned long long v) {
  ml_buf_reserve(b, 20);
  ml_buf_putu(b, v);
}

/* Drops the first n bytes. */
static inline void ml_buf_consume(ml_buf_t *b, size_t n) {
  if (n >= b->len) { b->len = 0; return; }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

/* Empties the buffer; gives memory back when it grew past `keep` bytes. */
static inline void ml_buf_reset(ml_buf_t *b, size_t keep) {
  b->len = 0;
  if (b->cap > keep) { free(b->data); b->data = NULL; b->cap = 0; }
}

static inline void ml_buf_free(ml_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
#endif
