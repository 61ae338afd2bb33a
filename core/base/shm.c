/* Shared-memory regions (see shm.h). */
#define _GNU_SOURCE
#include "shm.h"
#include "err.h"
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void *ml_shm_create(const char *name, size_t size, int *fd, char *err, size_t errlen) {
  int f = memfd_create(name, MFD_CLOEXEC);
  if (f < 0) {
    ml_err(err, errlen, "shared memory: memfd_create: %s", strerror(errno));
    return NULL;
  }
  if (ftruncate(f, (off_t)size) != 0) {
    ml_err(err, errlen, "shared memory: %zu bytes: %s", size, strerror(errno));
    close(f);
    return NULL;
  }
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
  if (p == MAP_FAILED) {
    ml_err(err, errlen, "shared memory: mmap of %zu bytes: %s", size, strerror(errno));
    close(f);
    return NULL;
  }
  *fd = f;
  return p;
}

void *ml_shm_attach(int fd, size_t *size, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    ml_err(err, errlen, "shared memory: descriptor %d is not a region", fd);
    return NULL;
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    ml_err(err, errlen, "shared memory: mmap: %s", strerror(errno));
    return NULL;
  }
  *size = (size_t)st.st_size;
  return p;
}

void ml_shm_unmap(void *base, size_t size) {
  if (base) munmap(base, size);
}
