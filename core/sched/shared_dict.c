/* Dictionaries in the shared region (see shared_dict.h). An entry is one heap block:
 * its hash-chain and LRU links, expiry, number, then the key's and the string value's
 * bytes. Each dictionary's hash table is an array of entry offsets in the heap, doubled
 * when it averages two entries a slot. Every change to a dictionary's chains or list
 * happens between BUSY and IDLE (the region's busy_dict marker) so that a process killed
 * in between gets the dictionary emptied by the next locker instead of followed. */
#include "shared_dict.h"
#include "shared_heap.h"
#include "shared_region.h"
#include "err.h"
#include "hash.h"
#include "mem.h"
#include <stdint.h>
#include <string.h>
#include <uv.h>

typedef struct {
  uint64_t hnext;           /* next entry in the same hash slot */
  uint64_t lprev, lnext;    /* LRU list: lprev towards the most recently used */
  uint64_t expires;         /* uv_hrtime() deadline (CLOCK_MONOTONIC: every process's), 0 never */
  double num;
  uint32_t hash, vlen;
  uint16_t klen;
  uint8_t type;
  uint8_t pad[5];
  char data[];              /* key, then a string value */
} ent_t;

#define FIRST_SLOTS 16
#define EXPIRED_SCAN 8      /* entries looked at from the LRU end for expired ones */

static inline ent_t *E(uint64_t off) { return ML_SHR_AT(off); }
static inline uint64_t *slots_of(ml_shr_dict_t *d) { return ML_SHR_AT(d->slots); }
static inline int expired(const ent_t *e, uint64_t now) { return e->expires && e->expires <= now; }

/* BUSY(d) before the first store into d's chains, list or table; the operation ends with
 * IDLE, so a get that finds its entry already the most recent writes no marker at all. */
#define BUSY(d) ml_shr_mark(&ML_SHR->busy_dict, (uint32_t)((d) - ML_SHR->dicts) + 1)
#define IDLE(r) do { if ((r)->busy_dict) ml_shr_mark(&(r)->busy_dict, 0); } while (0)

static uint64_t deadline(double ttl, uint64_t now) {
  return ttl > 0 ? now + (uint64_t)(ttl * 1e9) : 0;
}

/* --- the LRU list --- */

static void lru_unlink(ml_shr_dict_t *d, uint64_t off) {
  ent_t *e = E(off);
  if (e->lprev) E(e->lprev)->lnext = e->lnext;
  else d->lru_head = e->lnext;
  if (e->lnext) E(e->lnext)->lprev = e->lprev;
  else d->lru_tail = e->lprev;
}

static void lru_push(ml_shr_dict_t *d, uint64_t off) {
  ent_t *e = E(off);
  e->lprev = 0;
  e->lnext = d->lru_head;
  if (d->lru_head) E(d->lru_head)->lprev = off;
  else d->lru_tail = off;
  d->lru_head = off;
}

static void lru_touch(ml_shr_dict_t *d, uint64_t off) {
  if (d->lru_head == off) return;
  BUSY(d);
  lru_unlink(d, off);
  lru_push(d, off);
}

/* --- the hash table --- */

/* The link that points at entry off (its slot or the previous entry's hnext). */
static uint64_t *link_of(ml_shr_dict_t *d, uint64_t off) {
  uint64_t *pe = &slots_of(d)[E(off)->hash & (d->nslots - 1)];
  while (*pe != off) pe = &E(*pe)->hnext;
  return pe;
}

/* Unlinks the entry *pe points at and frees it. */
static void drop(ml_shr_t *r, ml_shr_dict_t *d, uint64_t *pe) {
  uint64_t off = *pe;
  BUSY(d);
  *pe = E(off)->hnext;
  lru_unlink(d, off);
  d->count--;
  ml_shheap_free(r, off);
}

/* The link holding key k, or the 0 at its chain's end; NULL if the dictionary has no
 * table yet. With now != 0 an expired entry met on the way is dropped. */
static uint64_t *find(ml_shr_t *r, ml_shr_dict_t *d, const char *k, size_t klen, uint32_t h,
                      uint64_t now) {
  if (!d->slots) return NULL;
  uint64_t *pe = &slots_of(d)[h & (d->nslots - 1)];
  while (*pe) {
    ent_t *e = E(*pe);
    if (e->hash == h && e->klen == klen && memcmp(e->data, k, klen) == 0) {
      if (now && expired(e, now)) {
        drop(r, d, pe);
        continue;
      }
      return pe;
    }
    pe = &e->hnext;
  }
  return pe;
}

/* Doubles the table (or makes the first one). 0, or -1 if the heap has no room. */
static int grow(ml_shr_t *r, int i, ml_shr_dict_t *d) {
  uint64_t n = d->nslots ? d->nslots * 2 : FIRST_SLOTS;
  uint64_t s = ml_shheap_alloc(r, n * sizeof(uint64_t), (uint32_t)i + 1);
  if (!s) return -1;
  BUSY(d);
  uint64_t *slots = ML_SHR_AT(s);
  memset(slots, 0, n * sizeof *slots);
  for (uint64_t j = 0; j < d->nslots; j++) {
    uint64_t off = slots_of(d)[j];
    while (off) {
      uint64_t next = E(off)->hnext;
      E(off)->hnext = slots[E(off)->hash & (n - 1)];
      slots[E(off)->hash & (n - 1)] = off;
      off = next;
    }
  }
  if (d->slots) ml_shheap_free(r, d->slots);
  d->slots = s;
  d->nslots = n;
  return 0;
}

/* Drops up to max expired entries from the LRU end (where OpenResty looks too). */
static void expire_tail(ml_shr_t *r, ml_shr_dict_t *d, uint64_t now, int max) {
  uint64_t off = d->lru_tail;
  for (int n = 0; off && n < EXPIRED_SCAN && max > 0; n++) {
    uint64_t prev = E(off)->lprev;
    if (expired(E(off), now)) {
      drop(r, d, link_of(d, off));
      max--;
    }
    off = prev;
  }
}

/* Drops expired entries near the LRU end of every dictionary: dead to everyone, so their
 * room may go to any dictionary, even to a write that must not evict. */
static void reclaim_expired(ml_shr_t *r, uint64_t now) {
  for (int j = 0; j < ML_SHR_MAX_DICTS; j++)
    if (r->dicts[j].used && r->dicts[j].lru_tail) expire_tail(r, &r->dicts[j], now, EXPIRED_SCAN);
}

/* A block of bytes for dictionary i: evicts (unless safe) expired entries near the LRU
 * end, then the least recently used ones, until it fits. 0 if it never does. */
static uint64_t alloc_evicting(ml_shr_t *r, int i, ml_shr_dict_t *d, size_t bytes, int safe,
                               uint64_t now, int *forcible) {
  uint64_t off;
  while (!(off = ml_shheap_alloc(r, bytes, (uint32_t)i + 1)) && !safe && d->lru_tail) {
    uint64_t before = d->count;
    expire_tail(r, d, now, 1);
    if (d->count == before) {   /* nothing expired: the least recently used goes */
      drop(r, d, link_of(d, d->lru_tail));
      *forcible = 1;
    }
  }
  return off;
}

static void fill(ent_t *e, uint32_t h, const char *k, size_t klen, const ml_sval_t *v,
                 uint64_t expires) {
  e->hash = h;
  e->klen = (uint16_t)klen;
  e->type = (uint8_t)v->type;
  e->num = v->type == ML_SV_STR ? 0 : v->num;
  e->vlen = v->type == ML_SV_STR ? (uint32_t)v->len : 0;
  e->expires = expires;
  memcpy(e->data, k, klen);
  if (v->type == ML_SV_STR) memcpy(e->data + klen, v->str, v->len);
}

/* Stores a new entry for a key that *pe (NULL: no table yet) shows absent, or replaces the
 * entry *pe points at. Room comes from free blocks, then from expired entries of any
 * dictionary, then (unless ML_SD_SAFE) from this dictionary's live entries, least recently
 * used first. Lock held. */
static int put(ml_shr_t *r, int i, ml_shr_dict_t *d, uint64_t *pe, uint32_t h, const char *k,
               size_t klen, const ml_sval_t *v, uint64_t expires, int flags, uint64_t now,
               int *forcible) {
  size_t need = sizeof(ent_t) + klen + (v->type == ML_SV_STR ? v->len : 0);
  uint64_t old = pe ? *pe : 0;
  BUSY(d);
  if (old && ml_shheap_usable(r, old) >= need && ml_shheap_usable(r, old) < need + 64) {
    fill(E(old), h, k, klen, v, expires);   /* fits its old block: rewritten in place */
    lru_touch(d, old);
    return ML_SD_OK;
  }
  int safe = flags & ML_SD_SAFE;
  uint64_t off = ml_shheap_alloc(r, need, (uint32_t)i + 1);
  if (!off) {
    reclaim_expired(r, now);
    if (old) pe = link_of(d, old);   /* old is live, but its chain may have changed */
    off = ml_shheap_alloc(r, need, (uint32_t)i + 1);
  }
  if (!off && old && !safe) {   /* the old value goes anyway: its room first */
    drop(r, d, pe);
    old = 0;
  }
  if (!off) off = alloc_evicting(r, i, d, need, safe, now, forcible);
  if (!off) return ML_SD_NO_MEMORY;
  BUSY(d);   /* reclaiming may have named another dictionary meanwhile */
  fill(E(off), h, k, klen, v, expires);
  if (old) {   /* nothing was evicted (else old would be gone): pe still holds */
    E(off)->hnext = E(old)->hnext;
    *pe = off;
    lru_unlink(d, old);
    ml_shheap_free(r, old);
  } else {
    if (!d->slots && grow(r, i, d) != 0) {
      ml_shheap_free(r, off);
      return ML_SD_NO_MEMORY;
    }
    if (d->count >= d->nslots * 2) grow(r, i, d);   /* no room to grow: longer chains */
    uint64_t *slot = &slots_of(d)[h & (d->nslots - 1)];
    E(off)->hnext = *slot;
    *slot = off;
    d->count++;
  }
  lru_push(d, off);
  return ML_SD_OK;
}

/* An entry that could not fit even in an empty region (or whose length does not fit its
 * field): no eviction can help it. */
static int too_large(size_t klen, const ml_sval_t *v) {
  if (!v) return 0;
  size_t vlen = v->type == ML_SV_STR ? v->len : 0;
  return vlen > UINT32_MAX || sizeof(ent_t) + klen + vlen > ml_shheap_max_payload(ML_SHR);
}

/* --- the API --- */

int ml_sdict_open(const char *name, size_t len, char *err, size_t errlen) {
  ml_shr_t *r = ml_shr_get(err, errlen);
  if (!r) return -1;
  if (len == 0 || len > ML_SHR_NAME_MAX) return ml_err(err, errlen, "expected a dictionary name");
  int found = -1, free_slot = -1;
  ml_shr_lock();
  for (int i = 0; i < ML_SHR_MAX_DICTS && found < 0; i++) {
    ml_shr_dict_t *d = &r->dicts[i];
    if (!d->used) {
      if (free_slot < 0) free_slot = i;
    } else if (d->namelen == len && memcmp(d->name, name, len) == 0) {
      found = i;
    }
  }
  if (found < 0 && free_slot >= 0) {
    ml_shr_dict_t *d = &r->dicts[free_slot];
    memcpy(d->name, name, len);
    d->name[len] = 0;
    d->namelen = (uint32_t)len;
    ml_shr_mark(&d->used, 1);   /* after the name: a half-made entry is not used */
    found = free_slot;
  }
  ml_shr_unlock();
  if (found < 0) return ml_err(err, errlen, "too many shared dictionaries (at most %d)", ML_SHR_MAX_DICTS);
  return found;
}

const char *ml_sdict_name(int d) { return ML_SHR->dicts[d].name; }

static void copy_out(const ent_t *e, ml_sval_copy_t *out) {
  out->type = e->type;
  out->num = e->num;
  out->len = 0;
  out->str = out->small;
  if (e->type != ML_SV_STR) return;
  if (e->vlen > sizeof out->small) out->str = ml_xmalloc(e->vlen);
  memcpy(out->str, e->data + e->klen, e->vlen);
  out->len = e->vlen;
}

void ml_sval_copy_free(ml_sval_copy_t *v) {
  if (v->str && v->str != v->small) free(v->str);
  v->str = NULL;
}

int ml_sdict_get(int i, const char *k, size_t klen, ml_sval_copy_t *out) {
  ml_shr_t *r = ML_SHR;
  ml_shr_dict_t *d = &r->dicts[i];
  uint32_t h = ml_hash(k, klen);
  int rc = ML_SD_NOT_FOUND;
  ml_shr_lock();
  uint64_t *pe = find(r, d, k, klen, h, uv_hrtime());
  if (pe && *pe) {
    copy_out(E(*pe), out);
    lru_touch(d, *pe);
    rc = ML_SD_OK;
  }
  IDLE(r);
  ml_shr_unlock();
  return rc;
}

int ml_sdict_set(int i, const char *k, size_t klen, const ml_sval_t *v, double ttl, int flags,
                 int *forcible) {
  ml_shr_t *r = ML_SHR;
  ml_shr_dict_t *d = &r->dicts[i];
  if (too_large(klen, v)) return ML_SD_TOO_LARGE;
  uint32_t h = ml_hash(k, klen);
  uint64_t now = uv_hrtime();
  int rc = ML_SD_OK;
  ml_shr_lock();
  expire_tail(r, d, now, 2);
  uint64_t *pe = find(r, d, k, klen, h, now);
  if (pe && *pe && (flags & ML_SD_ADD)) rc = ML_SD_EXISTS;
  else if (!v) {
    if (pe && *pe) drop(r, d, pe);
  } else {
    rc = put(r, i, d, pe, h, k, klen, v, deadline(ttl, now), flags, now, forcible);
  }
  IDLE(r);
  ml_shr_unlock();
  return rc;
}

int ml_sdict_incr(int i, const char *k, size_t klen, double by, const double *init,
                  double ttl, double *out, int *forcible) {
  ml_shr_t *r = ML_SHR;
  ml_shr_dict_t *d = &r->dicts[i];
  uint32_t h = ml_hash(k, klen);
  uint64_t now = uv_hrtime();
  int rc = ML_SD_OK;
  ml_shr_lock();
  uint64_t *pe = find(r, d, k, klen, h, now);
  if (pe && *pe) {
    ent_t *e = E(*pe);
    if (e->type != ML_SV_NUM) {
      rc = ML_SD_NOT_NUMBER;
    } else {
      *out = (e->num += by);
      lru_touch(d, *pe);
    }
  } else if (!init) {
    rc = ML_SD_NOT_FOUND;
  } else {
    ml_sval_t v = {.type = ML_SV_NUM, .num = *init + by};
    *out = v.num;
    rc = put(r, i, d, pe, h, k, klen, &v, deadline(ttl, now), 0, now, forcible);
  }
  IDLE(r);
  ml_shr_unlock();
  return rc;
}

int ml_sdict_ttl(int i, const char *k, size_t klen, double *left) {
  ml_shr_t *r = ML_SHR;
  uint32_t h = ml_hash(k, klen);
  uint64_t now = uv_hrtime();
  int rc = ML_SD_NOT_FOUND;
  ml_shr_lock();
  uint64_t *pe = find(r, &r->dicts[i], k, klen, h, 0);   /* reads only: no drop */
  if (pe && *pe && !expired(E(*pe), now)) {
    uint64_t x = E(*pe)->expires;
    *left = x ? (double)(x - now) / 1e9 : 0;
    rc = ML_SD_OK;
  }
  ml_shr_unlock();
  return rc;
}

int ml_sdict_expire(int i, const char *k, size_t klen, double ttl) {
  ml_shr_t *r = ML_SHR;
  uint32_t h = ml_hash(k, klen);
  uint64_t now = uv_hrtime();
  int rc = ML_SD_NOT_FOUND;
  ml_shr_lock();
  uint64_t *pe = find(r, &r->dicts[i], k, klen, h, now);
  if (pe && *pe) {
    E(*pe)->expires = deadline(ttl, now);
    rc = ML_SD_OK;
  }
  IDLE(r);
  ml_shr_unlock();
  return rc;
}

int ml_sdict_keys(int i, int max, ml_buf_t *out) {
  ml_shr_t *r = ML_SHR;
  uint64_t now = uv_hrtime();
  int n = 0;
  ml_shr_lock();
  for (uint64_t off = r->dicts[i].lru_head; off && (max <= 0 || n < max); off = E(off)->lnext) {
    ent_t *e = E(off);
    if (expired(e, now)) continue;
    uint32_t len = e->klen;
    ml_buf_add(out, &len, 4);
    ml_buf_add(out, e->data, e->klen);
    n++;
  }
  ml_shr_unlock();
  return n;
}

void ml_sdict_flush_all(int i) {
  ml_shr_t *r = ML_SHR;
  ml_shr_dict_t *d = &r->dicts[i];
  ml_shr_lock();
  BUSY(d);
  for (uint64_t off = d->lru_head; off;) {
    uint64_t next = E(off)->lnext;
    ml_shheap_free(r, off);
    off = next;
  }
  d->lru_head = d->lru_tail = 0;
  d->count = 0;
  if (d->slots) memset(slots_of(d), 0, d->nslots * sizeof(uint64_t));
  IDLE(r);
  ml_shr_unlock();
}

size_t ml_sdict_capacity(void) { return ML_SHR->size; }

size_t ml_sdict_free_space(void) {
  ml_shr_t *r = ML_SHR;
  ml_shr_lock();
  size_t n = (size_t)(r->heap_end - r->heap_start - r->heap_used);
  ml_shr_unlock();
  return n;
}
