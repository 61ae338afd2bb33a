/* Header lists (see headers.h). */
#include "headers.h"
#include "mem.h"

/* A connection keeps its store and list from request to request, and a server holding
 * 10,000 waiting connections holds 10,000 of each: they start small (a short URL and a few
 * headers fit: an API client's or a load generator's request) and double from there, so a
 * browser's longer header block costs a few reallocations on a connection's first request
 * only. */
enum { STORE_START = 64, LIST_START = 4 };

static void store_add(ml_headers_t *h, const char *at, size_t len) {
  if (!h->store.cap && len <= STORE_START) {
    h->store.data = ml_xmalloc(STORE_START);
    h->store.cap = STORE_START;
  }
  ml_buf_add(&h->store, at, len);
}

void ml_headers_raw(ml_headers_t *h, const char *at, size_t len) {
  store_add(h, at, len);
}

void ml_headers_clear(ml_headers_t *h, size_t keep) {
  h->n = 0;
  if (h->store.len > keep) h->store.len = keep;
}

void ml_headers_copy(ml_headers_t *dst, const ml_headers_t *src) {
  dst->store.len = 0;
  ml_buf_add(&dst->store, src->store.data, src->store.len);
  if (dst->cap < src->n) {
    dst->cap = src->n;
    dst->list = ml_xrealloc(dst->list, sizeof *dst->list * (size_t)dst->cap);
  }
  if (src->n) memcpy(dst->list, src->list, sizeof *dst->list * (size_t)src->n);
  dst->n = src->n;
}

void ml_headers_shrink(ml_headers_t *h) {
  if (h->store.len && h->store.cap > h->store.len) {
    h->store.data = ml_xrealloc(h->store.data, h->store.len);
    h->store.cap = h->store.len;
  }
  if (h->n && h->cap > h->n) {
    h->list = ml_xrealloc(h->list, sizeof *h->list * (size_t)h->n);
    h->cap = h->n;
  }
}

void ml_headers_free(ml_headers_t *h) {
  ml_buf_free(&h->store);
  free(h->list);
  h->list = NULL;
  h->n = h->cap = 0;
}

void ml_headers_name(ml_headers_t *h, const char *at, size_t len) {
  ml_header_t *cur = h->n ? &h->list[h->n - 1] : NULL;
  if (!cur || cur->val_off != UINT32_MAX) {   /* the previous header is finished */
    if (h->n == h->cap) {
      h->cap = h->cap ? h->cap * 2 : LIST_START;
      h->list = ml_xrealloc(h->list, sizeof *h->list * (size_t)h->cap);
    }
    cur = &h->list[h->n++];
    cur->name_off = (uint32_t)h->store.len;
    cur->name_len = 0;
    cur->val_off = UINT32_MAX;
    cur->val_len = 0;
  }
  size_t start = h->store.len;
  store_add(h, at, len);
  for (size_t i = start; i < h->store.len; i++) {
    char c = h->store.data[i];
    if (c >= 'A' && c <= 'Z') h->store.data[i] = (char)(c + 32);
  }
  cur->name_len += (uint32_t)len;
}

void ml_headers_value(ml_headers_t *h, const char *at, size_t len) {
  ml_header_t *cur = &h->list[h->n - 1];
  if (cur->val_off == UINT32_MAX) cur->val_off = (uint32_t)h->store.len;
  store_add(h, at, len);
  cur->val_len += (uint32_t)len;
}

int ml_headers_value_done(ml_headers_t *h) {
  ml_header_t *cur = &h->list[h->n - 1];
  if (cur->name_len == 0) return -1;
  if (cur->val_off == UINT32_MAX) cur->val_off = (uint32_t)h->store.len;   /* empty value */
  while (cur->val_len > 0) {   /* trailing whitespace is not part of a field value */
    char c = h->store.data[cur->val_off + cur->val_len - 1];
    if (c != ' ' && c != '\t') break;
    cur->val_len--;
  }
  return 0;
}

const char *ml_headers_next(const ml_headers_t *h, const char *name, int *at, size_t *len) {
  size_t nlen = strlen(name);
  while (*at < h->n) {
    const ml_header_t *hd = &h->list[(*at)++];
    if (hd->name_len == nlen && memcmp(h->store.data + hd->name_off, name, nlen) == 0) {
      *len = hd->val_len;
      return h->store.data + hd->val_off;
    }
  }
  return NULL;
}

const char *ml_headers_get(const ml_headers_t *h, const char *name, size_t *len) {
  int at = 0;
  return ml_headers_next(h, name, &at, len);
}

void ml_headers_push(lua_State *L, const ml_headers_t *h) {
  lua_createtable(L, 0, h->n);
  for (int i = 0; i < h->n; i++) {
    const ml_header_t *hd = &h->list[i];
    const char *name = h->store.data + hd->name_off;
    lua_pushlstring(L, name, hd->name_len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->store.data + hd->val_off, hd->val_len);
    } else {
      int cookie = hd->name_len == 6 && memcmp(name, "cookie", 6) == 0;
      lua_pushlstring(L, cookie ? "; " : ", ", 2);
      lua_pushlstring(L, h->store.data + hd->val_off, hd->val_len);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
}
