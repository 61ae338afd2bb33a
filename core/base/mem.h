/* Allocation: out of memory is fatal in moonlet, as it is for LuaJIT (which panics) and for
 * ml_buf_t. ml_xmalloc and the others never return NULL: they print one line and abort, so
 * no caller checks by hand. Use them everywhere in core/; a size of 0 still gives a
 * pointer that free() takes. */
#ifndef ML_MEM_H
#define ML_MEM_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline void *ml_oom_check(void *p) {
  if (!p) {
    fputs("moonlet: out of memory\n", stderr);
    abort();
  }
  return p;
}

static inline void *ml_xmalloc(size_t n) { return ml_oom_check(malloc(n ? n : 1)); }
static inline void *ml_xcalloc(size_t n, size_t size) {
  return ml_oom_check(calloc(n ? n : 1, size ? size : 1));
}
static inline void *ml_xrealloc(void *p, size_t n) { return ml_oom_check(realloc(p, n ? n : 1)); }
static inline char *ml_xstrdup(const char *s) { return ml_oom_check(strdup(s)); }
#endif
