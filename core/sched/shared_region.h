/* The shared-memory region behind moonlet.shared (internal to shared*.c; the hand-off to
 * the supervisor is in shared.h). One region holds every dictionary of every process that
 * maps it. Everything inside is addressed by offsets from the region's start, since each
 * process maps it at an address of its own. Layout:
 *
 *   [ ml_shr_t: magic, version, size, the lock, the "being modified" markers, the
 *     allocator's free lists, the directory: ML_SHR_MAX_DICTS dictionaries by name ]
 *   [ the heap (shared_heap.c): entries and hash-slot arrays, each block tagged with the
 *     dictionary that owns it ]
 *
 * Locking: ONE mutex for the whole region (robust and process-shared, see below). Every operation is short
 * (a hash lookup, a copy, at worst a few evictions; never Lua, never a syscall), so the lock
 * is held for a microsecond or less and one lock costs less than two (a dictionary's and
 * the allocator's, taken in turn by every write). One lock also makes recovering from a
 * dead owner simple: nobody else can be inside, so what the markers name can be repaired or
 * emptied on the spot. The price: two dictionaries do not update in parallel.
 *
 * A region made at the first dictionary use of a process that was given none (one process,
 * no --workers) is that process's own: its descriptor is closed at once, and its lock is a
 * plain process-private mutex (a robust process-shared one costs about 18 ns more per
 * operation here, a fifth of a get; measured). A region made by ml_shared_region_create
 * (the supervisor) has the robust process-shared lock and is the only kind attach takes.
 *
 * A dead owner: a process killed while holding the lock leaves it to the next locker with
 * EOWNERDEAD (robust mutex). The markers say what it was doing: busy_heap (inside the
 * allocator: the free lists may be torn) empties the whole region; busy_dict (inside one
 * dictionary's hash chains or LRU list) empties that dictionary and gives back the blocks
 * tagged with it (the heap itself is intact then). Both are logged at error with what was
 * lost. A dead owner with no marker set had changed no link (it read, or stored one
 * aligned word: an incr's number, an expiry): nothing to repair. */
#ifndef ML_SHARED_REGION_H
#define ML_SHARED_REGION_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define ML_SHR_MAGIC 0x316d68736e6f6f6dull   /* "moonshm1" */
#define ML_SHR_VERSION 1
#define ML_SHR_MAX_DICTS 128
#define ML_SHR_NAME_MAX 255
#define ML_SHR_NBINS 64

/* A dictionary: its hash table (slots: an array of nslots entry offsets, in the heap) and
 * its LRU list (lru_head: most recently used). Entries are in shared_dict.c. */
typedef struct {
  uint64_t slots, nslots, count;
  uint64_t lru_head, lru_tail;
  uint32_t used;              /* the directory slot holds a dictionary */
  uint32_t namelen;
  char name[ML_SHR_NAME_MAX + 1];
} ml_shr_dict_t;

typedef struct {
  uint64_t magic;
  uint32_t version, header_size;   /* header_size: sizeof(ml_shr_t), one binary's layout */
  uint32_t shared, pad;            /* 1: made for several processes (robust shared lock) */
  uint64_t size;                   /* of the whole region, bytes */
  uint64_t heap_start, heap_end;   /* offsets */
  uint64_t heap_used;              /* bytes in used blocks, headers included */
  pthread_mutex_t lock;            /* process-shared, robust: guards everything below */
  uint32_t busy_dict;              /* index + 1 of the dictionary being changed, or 0 */
  uint32_t busy_heap;              /* 1 while the allocator changes its lists */
  uint64_t bins[ML_SHR_NBINS];     /* free lists by size class (shared_heap.c) */
  ml_shr_dict_t dicts[ML_SHR_MAX_DICTS];
} ml_shr_t;

/* This process's mapping (NULL until the region exists here). Set once, before any
 * dictionary handle exists, and never changed after: readers holding a handle need no
 * synchronisation of their own. */
extern char *ml_shr_base;
#define ML_SHR ((ml_shr_t *)ml_shr_base)
#define ML_SHR_AT(off) ((void *)(ml_shr_base + (off)))

/* The region, created with the configured size if this process has none yet. NULL with
 * err if it cannot be made. */
ml_shr_t *ml_shr_get(char *err, size_t errlen);

/* Takes the region lock; if its previous owner died holding it, repairs what the markers
 * name first (see the top comment). Never fails. */
void ml_shr_lock(void);
void ml_shr_unlock(void);

/* The markers: set before changing a dictionary's structure (or the allocator's), cleared
 * after. The compiler barrier keeps the stores in program order, which is all a process
 * killed in between needs (its executed stores are in the shared pages). */
static inline void ml_shr_mark(uint32_t *marker, uint32_t v) {
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  __atomic_store_n(marker, v, __ATOMIC_RELAXED);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
}
#endif
