/* ml_hash: the one string hash (32-bit FNV-1a) for moonlet's hash tables. Fast on short
 * keys and good enough for tables that stay small or are keyed by the app's own strings;
 * not meant to resist keys chosen to collide. */
#ifndef ML_HASH_H
#define ML_HASH_H
#include <stddef.h>
#include <stdint.h>

static inline uint32_t ml_hash(const void *p, size_t len) {
  const unsigned char *s = p;
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++) h = (h ^ s[i]) * 16777619u;
  return h;
}
#endif
