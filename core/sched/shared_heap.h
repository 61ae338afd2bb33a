/* The allocator of the shared region (see shared_region.h): a boundary-tag heap over
 * offsets. Every block starts with a 24-byte tag (its size, the size of the block before
 * it, the dictionary that owns it, used or free), so the heap can be walked from start to
 * end, and a freed block merges with free neighbours at once: no two free blocks are ever
 * adjacent, which keeps fragmentation to what the live blocks themselves cause. Free blocks
 * sit in one of 64 lists by the power of two of their size; a request takes the first fit
 * among a few blocks of its own class, else the first block of a larger class, and splits
 * off the rest. All of it O(1) or bounded, no Lua, no syscalls.
 *
 * Callers hold the region lock. Each function sets the region's busy_heap marker while it
 * changes the lists, so a process killed inside one makes the next locker rebuild the heap
 * (and empty every dictionary) instead of trusting torn lists. */
#ifndef ML_SHARED_HEAP_H
#define ML_SHARED_HEAP_H
#include "shared_region.h"

#define ML_SHHEAP_TAG 24   /* bytes of tag before each block's payload */

/* Makes [heap_start, heap_end) one free block. */
void ml_shheap_init(ml_shr_t *r);
/* The offset of a payload of at least bytes tagged with owner (a dictionary's index + 1),
 * or 0 when no free block is large enough. */
uint64_t ml_shheap_alloc(ml_shr_t *r, size_t bytes, uint32_t owner);
/* Gives the block of payload offset p back. */
void ml_shheap_free(ml_shr_t *r, uint64_t p);
/* Bytes the payload at p may use (at least what was asked). */
size_t ml_shheap_usable(ml_shr_t *r, uint64_t p);
/* Frees every block tagged with owner by walking the heap (a dictionary whose own links
 * cannot be trusted any more); returns how many. */
size_t ml_shheap_free_owned(ml_shr_t *r, uint32_t owner);
/* 0 if the tags are consistent: the blocks tile the heap, each prev_size is right, no two
 * free blocks touch, heap_used adds up and the free lists hold exactly the free blocks;
 * else -1 with what is wrong in err. Reads only (tests, and a debugger's friend). */
int ml_shheap_check(const ml_shr_t *r, char *err, size_t errlen);
/* The largest payload this heap could ever hold (everything else free). */
size_t ml_shheap_max_payload(const ml_shr_t *r);
#endif
