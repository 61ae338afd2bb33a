/* Dictionaries in the shared region (the C side of moonlet.shared; shared.c is the Lua
 * side): a hash table and an LRU list per dictionary, entries carved out of the region's
 * heap. Every function takes the region lock for its duration and is safe from any thread
 * of any process that maps the region. Nothing here runs Lua: values come in as
 * ml_sval_t (borrowed) and go out copied into the caller's ml_sval_copy_t.
 *
 * Writes that need room take it from expired entries first (near the LRU end of every
 * dictionary: nobody can read them any more), then evict the least recently used entries
 * of their own dictionary until the new entry fits; ML_SD_SAFE writes never evict a live
 * entry. get and incr make an entry the most recently used. */
#ifndef ML_SHARED_DICT_H
#define ML_SHARED_DICT_H
#include "buf.h"
#include <stddef.h>

enum { ML_SD_OK, ML_SD_NOT_FOUND, ML_SD_EXISTS, ML_SD_NOT_NUMBER, ML_SD_NO_MEMORY,
       ML_SD_TOO_LARGE };
enum { ML_SV_BOOL, ML_SV_NUM, ML_SV_STR };

typedef struct {
  int type;             /* ML_SV_* */
  double num;           /* ML_SV_NUM; ML_SV_BOOL: 0 or 1 */
  const char *str;      /* ML_SV_STR: len bytes, borrowed */
  size_t len;
} ml_sval_t;

typedef struct {
  int type;
  double num;
  size_t len;
  char *str;            /* small, or malloc'd for longer strings: ml_sval_copy_free */
  char small[256];
} ml_sval_copy_t;

#define ML_SD_ADD 1     /* store only if the key is absent (else ML_SD_EXISTS) */
#define ML_SD_SAFE 2    /* never evict (ML_SD_NO_MEMORY instead) */

/* The index of the dictionary called name (1 to 255 bytes), created on first use; the
 * region is created here if this process has none yet. -1 with err. */
int ml_sdict_open(const char *name, size_t len, char *err, size_t errlen);
const char *ml_sdict_name(int d);

/* Returns ML_SD_OK and the value in *out, or ML_SD_NOT_FOUND. */
int ml_sdict_get(int d, const char *k, size_t klen, ml_sval_copy_t *out);
void ml_sval_copy_free(ml_sval_copy_t *v);
/* Stores v under k for ttl seconds (0: forever); v NULL deletes. flags: ML_SD_ADD,
 * ML_SD_SAFE. *forcible is set to 1 when live entries were evicted to make room. Returns
 * ML_SD_OK, ML_SD_EXISTS (add), ML_SD_NO_MEMORY or ML_SD_TOO_LARGE (the entry could not
 * fit in the region even if it were empty). */
int ml_sdict_set(int d, const char *k, size_t klen, const ml_sval_t *v, double ttl, int flags,
                 int *forcible);
/* Adds by to the number under k; if k is absent and init is not NULL, stores *init + by
 * with ttl. ML_SD_OK (*out: the new value), ML_SD_NOT_FOUND, ML_SD_NOT_NUMBER, or the
 * errors of ml_sdict_set. */
int ml_sdict_incr(int d, const char *k, size_t klen, double by, const double *init,
                  double ttl, double *out, int *forcible);
/* Seconds k has left (0: it never expires) in *left; ML_SD_OK or ML_SD_NOT_FOUND. */
int ml_sdict_ttl(int d, const char *k, size_t klen, double *left);
/* k expires ttl seconds from now (0: never); ML_SD_OK or ML_SD_NOT_FOUND. */
int ml_sdict_expire(int d, const char *k, size_t klen, double ttl);
/* Appends up to max (0: all) live keys, most recently used first, to out as (u32 length,
 * bytes) pairs; returns how many. */
int ml_sdict_keys(int d, int max, ml_buf_t *out);
void ml_sdict_flush_all(int d);

/* The region's size, and the bytes of it not in use (by any dictionary). */
size_t ml_sdict_capacity(void);
size_t ml_sdict_free_space(void);
#endif
