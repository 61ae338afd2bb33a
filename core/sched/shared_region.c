/* The shared region: creating it (lazily in one process, or by the supervisor), mapping it
 * in a worker, and the lock with its repair after a dead owner (see shared_region.h). */
#include "shared_region.h"
#include "shared.h"
#include "shared_heap.h"
#include "err.h"
#include "log.h"
#include "shm.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIN_HEAP 4096

char *ml_shr_base;
static size_t configured = 64u << 20;   /* atomic; the size of a region made at first use */
static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

void ml_shared_configure(size_t bytes) {
  __atomic_store_n(&configured, bytes, __ATOMIC_RELAXED);
}

static size_t heap_start(void) { return (sizeof(ml_shr_t) + 63) & ~(size_t)63; }

/* Lays the header and the heap out in fresh zero-filled pages mapped at base. The magic is
 * written last: a region that has it is complete. */
static int region_init(char *base, size_t size, int shared, char *err, size_t errlen) {
  ml_shr_t *r = (ml_shr_t *)base;
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a) != 0 ||
      (shared && (pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
                  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0)) ||
      pthread_mutex_init(&r->lock, &a) != 0)
    return ml_err(err, errlen, "shared memory: no process-shared robust mutex here");
  pthread_mutexattr_destroy(&a);
  r->shared = (uint32_t)shared;
  r->version = ML_SHR_VERSION;
  r->header_size = sizeof(ml_shr_t);
  r->size = size;
  r->heap_start = heap_start();
  r->heap_end = size & ~(size_t)7;
  ml_shheap_init(r);
  __atomic_store_n(&r->magic, ML_SHR_MAGIC, __ATOMIC_RELEASE);
  return 0;
}

/* Creates and maps a region of bytes; returns its descriptor or -1. create_lock held.
 * shared: for other processes too (a robust process-shared lock), else for this one. */
static int create_locked(size_t bytes, int shared, char *err, size_t errlen) {
  if (ml_shr_base) return ml_err(err, errlen, "shared memory: this process has a region already");
  if (bytes < heap_start() + MIN_HEAP)
    return ml_err(err, errlen, "--shared-mem %zu: too small, at least %zu bytes", bytes,
                  heap_start() + MIN_HEAP);
  int fd;
  char *p = ml_shm_create("moonlet-shared", bytes, &fd, err, errlen);
  if (!p) return -1;
  if (region_init(p, bytes, shared, err, errlen) != 0) {
    ml_shm_unmap(p, bytes);
    close(fd);
    return -1;
  }
  __atomic_store_n(&ml_shr_base, p, __ATOMIC_RELEASE);
  return fd;
}

int ml_shared_region_create(size_t bytes, char *err, size_t errlen) {
  pthread_mutex_lock(&create_lock);
  int fd = create_locked(bytes, 1, err, errlen);
  pthread_mutex_unlock(&create_lock);
  return fd;
}

int ml_shared_region_attach(int fd, char *err, size_t errlen) {
  pthread_mutex_lock(&create_lock);
  int rc = -1;
  size_t size = 0;
  char *p = NULL;
  if (ml_shr_base) {
    ml_err(err, errlen, "shared memory: this process has a region already");
    goto out;
  }
  if (!(p = ml_shm_attach(fd, &size, err, errlen))) goto out;
  ml_shr_t *r = (ml_shr_t *)p;
  if (size < sizeof *r || __atomic_load_n(&r->magic, __ATOMIC_ACQUIRE) != ML_SHR_MAGIC) {
    ml_err(err, errlen, "shared memory: descriptor %d is not a moonlet.shared region", fd);
    goto out;
  }
  if (!r->shared) {   /* cannot happen: a private region's descriptor is closed at once */
    ml_err(err, errlen, "shared memory: descriptor %d is a region private to its process", fd);
    goto out;
  }
  if (r->version != ML_SHR_VERSION || r->header_size != sizeof *r || r->size != size) {
    ml_err(err, errlen, "shared memory: region of another moonlet build (version %u, header %u)",
           r->version, r->header_size);
    goto out;
  }
  __atomic_store_n(&ml_shr_base, p, __ATOMIC_RELEASE);
  p = NULL;
  rc = 0;
out:
  if (p) ml_shm_unmap(p, size);
  pthread_mutex_unlock(&create_lock);
  return rc;
}

ml_shr_t *ml_shr_get(char *err, size_t errlen) {
  char *p = __atomic_load_n(&ml_shr_base, __ATOMIC_ACQUIRE);
  if (p) return (ml_shr_t *)p;
  pthread_mutex_lock(&create_lock);
  if (!ml_shr_base) {
    int fd = create_locked(__atomic_load_n(&configured, __ATOMIC_RELAXED), 0, err, errlen);
    if (fd >= 0) close(fd);   /* this process's own: nobody else can map it now */
  }
  pthread_mutex_unlock(&create_lock);
  return (ml_shr_t *)__atomic_load_n(&ml_shr_base, __ATOMIC_ACQUIRE);
}

static void dict_empty(ml_shr_dict_t *d) {
  d->slots = d->nslots = d->count = 0;
  d->lru_head = d->lru_tail = 0;
}

/* The previous owner died holding the lock: make what it was changing usable again. */
static void repair(ml_shr_t *r) {
  if (r->busy_heap) {
    unsigned long long lost = 0;
    int n = 0;
    for (int i = 0; i < ML_SHR_MAX_DICTS; i++)
      if (r->dicts[i].used) {
        lost += r->dicts[i].count;
        n++;
        dict_empty(&r->dicts[i]);
      }
    ml_shheap_init(r);
    ml_log(ML_LOG_ERROR,
           "moonlet.shared: a process died while allocating shared memory: emptied all %d "
           "dictionaries (%llu entries lost)", n, lost);
  } else if (r->busy_dict) {
    ml_shr_dict_t *d = &r->dicts[r->busy_dict - 1];
    unsigned long long lost = d->count;
    ml_shheap_free_owned(r, r->busy_dict);
    dict_empty(d);
    ml_log(ML_LOG_ERROR,
           "moonlet.shared: a process died while changing dictionary \"%s\": emptied it "
           "(%llu entries lost)", d->name, lost);
  } else {
    ml_log(ML_LOG_WARN, "moonlet.shared: a process died holding the lock (it changed nothing)");
  }
  ml_shr_mark(&r->busy_dict, 0);
  ml_shr_mark(&r->busy_heap, 0);
}

void ml_shr_lock(void) {
  ml_shr_t *r = ML_SHR;
  int rc = pthread_mutex_lock(&r->lock);
  if (rc == 0) return;
  if (rc == EOWNERDEAD) {
    repair(r);
    pthread_mutex_consistent(&r->lock);
    return;
  }
  /* ENOTRECOVERABLE: only if an owner unlocked without marking it consistent, which this
   * file never does (a repairer that dies leaves EOWNERDEAD and its markers again) */
  fprintf(stderr, "moonlet: moonlet.shared lock: %s\n", strerror(rc));
  abort();
}

void ml_shr_unlock(void) { pthread_mutex_unlock(&ML_SHR->lock); }
