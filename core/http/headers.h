/* A header list as llhttp delivers it: names and values arrive in pieces and are copied
 * into one store (names lower-cased); entries are offsets into it. Shared by the request
 * parser (http.c) and the HTTP client's response parser (httpc.c). */
#ifndef ML_HEADERS_H
#define ML_HEADERS_H
#include "buf.h"
#include <lua.h>
#include <stdint.h>

typedef struct {
  uint32_t name_off, name_len;   /* in the store; names are lower-cased */
  uint32_t val_off, val_len;
} ml_header_t;

typedef struct {
  ml_buf_t store;            /* the owner may put its own bytes first (the request URL) */
  ml_header_t *list;
  int n, cap;
} ml_headers_t;

/* Makes dst a copy of src (dst's memory is reused). */
void ml_headers_copy(ml_headers_t *dst, const ml_headers_t *src);
/* Forgets every header; the store keeps its first `keep` bytes. */
void ml_headers_clear(ml_headers_t *h, size_t keep);
/* Gives back the room beyond what h holds, for a list kept long and added to no more (an
 * upgraded connection's request). The store may move. */
void ml_headers_shrink(ml_headers_t *h);
void ml_headers_free(ml_headers_t *h);
/* Bytes of the owner's own before the first header (the request URL's pieces). */
void ml_headers_raw(ml_headers_t *h, const char *at, size_t len);
/* A piece of a name; starts a new header after a value. */
void ml_headers_name(ml_headers_t *h, const char *at, size_t len);
/* A piece of the current header's value. */
void ml_headers_value(ml_headers_t *h, const char *at, size_t len);
/* The value is complete: trailing whitespace is dropped. Returns -1 if the name is empty. */
int ml_headers_value_done(ml_headers_t *h);
/* The first value of a lower-case name, or NULL. */
const char *ml_headers_get(const ml_headers_t *h, const char *name, size_t *len);
/* The next value of a lower-case name from entry *at on (start with *at = 0), or NULL when
 * there is none left; *at moves past the entry found. */
const char *ml_headers_next(const ml_headers_t *h, const char *name, int *at, size_t *len);
/* Pushes { name = value }; repeated headers joined with ", " (cookies with "; "). */
void ml_headers_push(lua_State *L, const ml_headers_t *h);
#endif
