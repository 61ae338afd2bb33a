/* moonlet.shared: dictionaries shared by the loop, every pool thread and, with --workers,
 * every worker process. They live in one shared-memory region of --shared-mem bytes
 * (shared_region.h: layout, locking, what happens when a process dies holding the lock;
 * shared_dict.h: the dictionaries; shared.c: the Lua API). Values are strings, numbers and
 * booleans with an optional time to live; a full dictionary evicts its least recently used
 * entries on set, add and incr (never on safe_set and safe_add). */
#ifndef ML_SHARED_H
#define ML_SHARED_H
#include <lua.h>
#include <stddef.h>

/* The size of the region this process makes at its first dictionary use, if it has none
 * by then (the size configured at first use wins; later calls change nothing). Any thread. */
void ml_shared_configure(size_t capacity_bytes);

/* Supervisor: creates the region of `bytes`, maps it here too, returns its fd (or -1
 * with err). Called before any worker is spawned. The descriptor is close-on-exec (pass it
 * to a worker through uv_spawn's stdio, or clear the flag); the caller owns it. Fails if
 * this process has a region already. */
int ml_shared_region_create(size_t bytes, char *err, size_t errlen);
/* Worker: maps the region behind fd (inherited), before the app loads. 0 or -1+err.
 * Checks that fd is a region made by this same build (magic, layout version, header size,
 * size); fails if this process has a region already. fd stays the caller's: it may be
 * closed once this returns, the mapping stays. */
int ml_shared_region_attach(int fd, char *err, size_t errlen);

/* For tests only (tests/unit/shared_test.c): takes the region's lock and returns holding
 * it, as a process killed inside an operation would. mode 0: only the lock; 1: also the
 * "being modified" marker of dictionary `dict` (created if needed); 2: the allocator's
 * marker. Never call this from a server. Returns 0, or -1 with err. */
int ml_shared_debug_lock(const char *dict, int mode, char *err, size_t errlen);
#endif
