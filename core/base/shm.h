/* Shared-memory regions: a memfd mapped MAP_SHARED. The descriptor survives exec (the
 * supervisor passes it to the worker processes it spawns, which map the same pages), so a
 * region is addressed by offsets inside it, never by pointers: each process maps it at an
 * address of its own. */
#ifndef ML_SHM_H
#define ML_SHM_H
#include <stddef.h>

/* A new zero-filled region of size bytes, mapped; *fd is its descriptor (close-on-exec:
 * clear the flag, or let uv_spawn pass it, to hand it on). NULL with err on failure. */
void *ml_shm_create(const char *name, size_t size, int *fd, char *err, size_t errlen);
/* Maps the region behind fd (whole size, read-write); *size is set. NULL with err. */
void *ml_shm_attach(int fd, size_t *size, char *err, size_t errlen);
void ml_shm_unmap(void *base, size_t size);
#endif
