/* The shared region's allocator (see shared_heap.h). A free block keeps its list links in
 * its payload: fnext, fprev (offsets, 0 ends a list: offset 0 is the region header, never a
 * block). */
#include "shared_heap.h"
#include "err.h"
#include <assert.h>

typedef struct {
  uint64_t size;        /* of the whole block, tag included; a multiple of 8 */
  uint64_t prev_size;   /* of the block just before, 0 for the first */
  uint32_t owner;       /* dictionary index + 1 while used, 0 free */
  uint32_t used;
  uint64_t fnext, fprev;   /* free blocks only: overlay the payload */
} blk_t;

#define MIN_BLOCK 48      /* a tag and the two links, rounded up to 16 */
#define FIT_SCAN 16       /* blocks looked at in a request's own class before a larger one */

/* The block at off in the region r that every function here is given (not through
 * ml_shr_base: the region is laid out before it is published). */
#define B(off) ((blk_t *)((char *)r + (off)))

static unsigned bin_of(uint64_t size) { return 63u - (unsigned)__builtin_clzll(size); }

static void bin_insert(ml_shr_t *r, uint64_t off) {
  blk_t *b = B(off);
  uint64_t *head = &r->bins[bin_of(b->size)];
  b->fprev = 0;
  b->fnext = *head;
  if (*head) B(*head)->fprev = off;
  *head = off;
}

static void bin_remove(ml_shr_t *r, uint64_t off) {
  blk_t *b = B(off);
  if (b->fprev) B(b->fprev)->fnext = b->fnext;
  else r->bins[bin_of(b->size)] = b->fnext;
  if (b->fnext) B(b->fnext)->fprev = b->fprev;
}

/* Tells the block after off (if any) how large off's block now is. */
static void set_next_prev(ml_shr_t *r, uint64_t off) {
  uint64_t next = off + B(off)->size;
  if (next < r->heap_end) B(next)->prev_size = B(off)->size;
}

void ml_shheap_init(ml_shr_t *r) {
  ml_shr_mark(&r->busy_heap, 1);
  for (int i = 0; i < ML_SHR_NBINS; i++) r->bins[i] = 0;
  blk_t *b = B(r->heap_start);
  b->size = r->heap_end - r->heap_start;
  b->prev_size = 0;
  b->owner = 0;
  b->used = 0;
  bin_insert(r, r->heap_start);
  r->heap_used = 0;
  ml_shr_mark(&r->busy_heap, 0);
}

size_t ml_shheap_max_payload(const ml_shr_t *r) {
  return (size_t)(r->heap_end - r->heap_start) - ML_SHHEAP_TAG;
}

static uint64_t take_fit(ml_shr_t *r, uint64_t need) {
  unsigned b = bin_of(need);
  int n = 0;
  for (uint64_t off = r->bins[b]; off && n < FIT_SCAN; off = B(off)->fnext, n++)
    if (B(off)->size >= need) return off;
  for (b++; b < ML_SHR_NBINS; b++)
    if (r->bins[b]) return r->bins[b];   /* every block of a larger class fits */
  return 0;
}

uint64_t ml_shheap_alloc(ml_shr_t *r, size_t bytes, uint32_t owner) {
  if (bytes > ml_shheap_max_payload(r)) return 0;
  uint64_t need = (bytes + ML_SHHEAP_TAG + 7) & ~(uint64_t)7;
  if (need < MIN_BLOCK) need = MIN_BLOCK;
  ml_shr_mark(&r->busy_heap, 1);
  uint64_t off = take_fit(r, need);
  if (!off) {
    ml_shr_mark(&r->busy_heap, 0);
    return 0;
  }
  blk_t *b = B(off);
  bin_remove(r, off);
  if (b->size - need >= MIN_BLOCK) {   /* split: the rest stays free */
    uint64_t rest = off + need;
    B(rest)->size = b->size - need;
    B(rest)->prev_size = need;
    B(rest)->owner = 0;
    B(rest)->used = 0;
    b->size = need;
    set_next_prev(r, rest);
    bin_insert(r, rest);
  }
  b->used = 1;
  b->owner = owner;
  r->heap_used += b->size;
  ml_shr_mark(&r->busy_heap, 0);
  return off + ML_SHHEAP_TAG;
}

/* Frees the block at off, merging it with free neighbours; returns the offset of the free
 * block it is now part of. Marker set by the caller. */
static uint64_t free_block(ml_shr_t *r, uint64_t off) {
  blk_t *b = B(off);
  assert(b->used);
  r->heap_used -= b->size;
  b->used = 0;
  b->owner = 0;
  uint64_t next = off + b->size;
  if (next < r->heap_end && !B(next)->used) {
    bin_remove(r, next);
    b->size += B(next)->size;
  }
  if (b->prev_size && !B(off - b->prev_size)->used) {
    uint64_t prev = off - b->prev_size;
    bin_remove(r, prev);
    B(prev)->size += b->size;
    off = prev;
  }
  set_next_prev(r, off);
  bin_insert(r, off);
  return off;
}

void ml_shheap_free(ml_shr_t *r, uint64_t p) {
  ml_shr_mark(&r->busy_heap, 1);
  free_block(r, p - ML_SHHEAP_TAG);
  ml_shr_mark(&r->busy_heap, 0);
}

size_t ml_shheap_usable(ml_shr_t *r, uint64_t p) {
  (void)r;
  return B(p - ML_SHHEAP_TAG)->size - ML_SHHEAP_TAG;
}

size_t ml_shheap_free_owned(ml_shr_t *r, uint32_t owner) {
  size_t n = 0;
  ml_shr_mark(&r->busy_heap, 1);
  for (uint64_t off = r->heap_start; off < r->heap_end;) {
    if (B(off)->used && B(off)->owner == owner) {
      off = free_block(r, off);
      n++;
    }
    off += B(off)->size;
  }
  ml_shr_mark(&r->busy_heap, 0);
  return n;
}

int ml_shheap_check(const ml_shr_t *r, char *err, size_t errlen) {
  uint64_t used = 0, nfree = 0, prev = 0, prev_free = 0, off = r->heap_start;
  for (; off < r->heap_end; off += B(off)->size) {
    const blk_t *b = B(off);
    if (b->size < MIN_BLOCK || b->size % 8 || off + b->size > r->heap_end)
      return ml_err(err, errlen, "block at %llu: size %llu", (unsigned long long)off,
                    (unsigned long long)b->size);
    if (b->prev_size != prev)
      return ml_err(err, errlen, "block at %llu: prev_size %llu, previous block %llu",
                    (unsigned long long)off, (unsigned long long)b->prev_size,
                    (unsigned long long)prev);
    if (!b->used && prev_free)
      return ml_err(err, errlen, "block at %llu: two free blocks touch", (unsigned long long)off);
    if (b->used) used += b->size;
    else nfree++;
    prev = b->size;
    prev_free = !b->used;
  }
  if (off != r->heap_end) return ml_err(err, errlen, "blocks end at %llu, not at the heap's end",
                                        (unsigned long long)off);
  if (used != r->heap_used)
    return ml_err(err, errlen, "heap_used %llu, used blocks %llu",
                  (unsigned long long)r->heap_used, (unsigned long long)used);
  uint64_t listed = 0;
  for (unsigned i = 0; i < ML_SHR_NBINS; i++)
    for (uint64_t f = r->bins[i], back = 0; f; back = f, f = B(f)->fnext, listed++) {
      if (B(f)->used || bin_of(B(f)->size) != i || B(f)->fprev != back)
        return ml_err(err, errlen, "free list %u: block at %llu does not belong", i,
                      (unsigned long long)f);
      if (listed > nfree) return ml_err(err, errlen, "free lists longer than the free blocks");
    }
  if (listed != nfree)
    return ml_err(err, errlen, "%llu free blocks, %llu listed", (unsigned long long)nfree,
                  (unsigned long long)listed);
  return 0;
}
