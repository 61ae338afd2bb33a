/* The metrics region and recording into this process's slot (see metrics.h). The region
 * is mapped once a process and stays mapped until the process ends: recording threads
 * (pool threads, the watchdog's) never have to ask whether it is still there. */
#include "metrics_region.h"
#include "err.h"
#include "shm.h"
#include <pthread.h>
#include <string.h>
#include <unistd.h>

const char *const ml_metrics_bound_text[ML_METRICS_NBUCKETS - 1] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};
const uint64_t ml_metrics_bound_ns[ML_METRICS_NBUCKETS - 1] = {
    1000000ull,   2500000ull,   5000000ull,    10000000ull,   25000000ull,
    50000000ull,  100000000ull, 250000000ull,  500000000ull,  1000000000ull,
    2500000000ull, 5000000000ull, 10000000000ull};

static ml_metrics_header_t *region;   /* mapped here; NULL: none */
static ml_metrics_slot_t *mine;       /* the slot this process records into; NULL: off */
static int worker;                    /* mine is in a supervisor's region (attach) */
static pthread_mutex_t series_lock = PTHREAD_MUTEX_INITIALIZER;

ml_metrics_header_t *ml_metrics_region(void) {
  return __atomic_load_n(&region, __ATOMIC_ACQUIRE);
}

int ml_metrics_on(void) {
  return __atomic_load_n(&mine, __ATOMIC_ACQUIRE) != NULL;
}

int ml_metrics_region_create(int nslots, char *err, size_t errlen) {
  if (nslots < 1 || nslots > 4096)
    return ml_err(err, errlen, "metrics: %d slots (1 to 4096)", nslots);
  if (region) return ml_err(err, errlen, "metrics: this process has a region already");
  size_t size = sizeof(ml_metrics_header_t) + (size_t)nslots * sizeof(ml_metrics_slot_t);
  int fd;
  /* zero-filled by the kernel, page by page as they are touched: a slot's unused series
   * cost no memory */
  ml_metrics_header_t *h = ml_shm_create("moonlet-metrics", size, &fd, err, errlen);
  if (!h) return -1;
  h->magic = ML_METRICS_MAGIC;
  h->nslots = (uint32_t)nslots;
  h->slot_size = sizeof(ml_metrics_slot_t);
  __atomic_store_n(&region, h, __ATOMIC_RELEASE);
  return fd;
}

/* The fixed series every slot starts with (metrics.h). */
static void series_init(ml_metrics_slot_t *s) {
  if (__atomic_load_n(&s->nseries, __ATOMIC_ACQUIRE) >= 2) return;
  strcpy(s->series[ML_METRICS_NO_ROUTE].route, "(no route)");
  strcpy(s->series[ML_METRICS_OVERFLOW].route, "(other)");
  __atomic_store_n(&s->nseries, 2, __ATOMIC_RELEASE);
}

/* Records into slot from now on: its gauges start from zero (a process gone before may
 * have left them), its counters go on. */
static void slot_take(int slot) {
  ml_metrics_slot_t *s = ml_metrics_slot_at(region, slot);
  ml_metrics_slot_gone(slot);
  series_init(s);
  __atomic_store_n(&s->pid, (int32_t)getpid(), __ATOMIC_RELAXED);
  __atomic_store_n(&mine, s, __ATOMIC_RELEASE);
}

int ml_metrics_region_attach(int fd, int slot, char *err, size_t errlen) {
  if (mine) return ml_err(err, errlen, "metrics: this process records into a slot already");
  if (!region) {
    size_t size;
    ml_metrics_header_t *h = ml_shm_attach(fd, &size, err, errlen);
    if (!h) return -1;
    if (size < sizeof *h || h->magic != ML_METRICS_MAGIC ||
        h->slot_size != sizeof(ml_metrics_slot_t) ||
        size < sizeof *h + (size_t)h->nslots * sizeof(ml_metrics_slot_t)) {
      ml_shm_unmap(h, size);
      return ml_err(err, errlen, "metrics: descriptor %d is not a metrics region of this "
                    "moonlet", fd);
    }
    __atomic_store_n(&region, h, __ATOMIC_RELEASE);
  }
  if (slot < 0 || (uint32_t)slot >= region->nslots)
    return ml_err(err, errlen, "metrics: slot %d of %u", slot, region->nslots);
  worker = 1;
  slot_take(slot);
  return 0;
}

/* ml_metrics_region_create then attach, for a host without a supervisor. */
int ml_metrics_region_own(char *err, size_t errlen) {
  if (mine) return worker;   /* else a host before this one made it: it is this one's too */
  if (!region && ml_metrics_region_create(1, err, errlen) < 0) return -1;
  slot_take(0);
  return 0;
}

void ml_metrics_slot_gone(int slot) {
  if (!region || slot < 0 || (uint32_t)slot >= region->nslots) return;
  ml_metrics_slot_t *s = ml_metrics_slot_at(region, slot);
  for (int g = 0; g < ML_G_COUNT; g++) __atomic_store_n(&s->gauges[g], 0, __ATOMIC_RELAXED);
  for (int q = 0; q < ML_METRICS_QUEUES; q++) {
    __atomic_store_n(&s->queues[q].running, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->queues[q].length, 0, __ATOMIC_RELAXED);
  }
  __atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
}

/* --- recording ------------------------------------------------------------------------- */

static inline void add(uint64_t *cell, uint64_t n) {
  __atomic_add_fetch(cell, n, __ATOMIC_RELAXED);
}

void ml_metrics_gauge(int gauge, int delta) {
  ml_metrics_slot_t *s = __atomic_load_n(&mine, __ATOMIC_RELAXED);
  if (s) __atomic_add_fetch(&s->gauges[gauge], delta, __ATOMIC_RELAXED);
}

/* A name already in the slot, or a new series (the overflow one when the slot is full). */
int ml_metrics_series(const char *route) {
  ml_metrics_slot_t *s = __atomic_load_n(&mine, __ATOMIC_ACQUIRE);
  if (!s) return -1;
  size_t len = strlen(route);
  if (len >= ML_METRICS_ROUTE_MAX) return ML_METRICS_OVERFLOW;
  pthread_mutex_lock(&series_lock);
  uint32_t n = __atomic_load_n(&s->nseries, __ATOMIC_ACQUIRE);
  int found = ML_METRICS_OVERFLOW;
  uint32_t i;
  for (i = 2; i < n; i++)
    if (strcmp(s->series[i].route, route) == 0) break;
  if (i < n) {
    found = (int)i;
  } else if (n < ML_METRICS_SERIES) {
    memcpy(s->series[n].route, route, len + 1);
    __atomic_store_n(&s->nseries, n + 1, __ATOMIC_RELEASE);
    found = (int)n;
  }
  pthread_mutex_unlock(&series_lock);
  return found;
}

ml_metrics_slot_t *ml_metrics_mine(void) {
  return __atomic_load_n(&mine, __ATOMIC_ACQUIRE);
}

void ml_metrics_hist_add(ml_metrics_hist_t *h, uint64_t ns) {
  int b = 0;
  while (b < ML_METRICS_NBUCKETS - 1 && ns > ml_metrics_bound_ns[b]) b++;
  add(&h->buckets[b], 1);
  add(&h->sum_ns, ns);
}

void ml_metrics_request(int series, int method, int status, uint64_t ns) {
  ml_metrics_slot_t *s = __atomic_load_n(&mine, __ATOMIC_RELAXED);
  if (!s || series < 0 || series >= ML_METRICS_SERIES) return;
  ml_metrics_series_t *r = &s->series[series];
  int m = method >= 0 && method < ML_M_COUNT ? method : ML_M_COUNT;
  int c = status / 100 - 1;
  if (c < 0) c = 0;
  if (c >= ML_METRICS_CLASSES) c = ML_METRICS_CLASSES - 1;
  add(&r->requests[m][c], 1);
  ml_metrics_hist_add(&r->duration, ns);
}

void ml_metrics_stall(int series) {
  ml_metrics_slot_t *s = __atomic_load_n(&mine, __ATOMIC_RELAXED);
  if (s && series >= 0 && series < ML_METRICS_SERIES) add(&s->series[series].stalls, 1);
}

void ml_metrics_loop_turn(uint64_t ns) {
  ml_metrics_slot_t *s = __atomic_load_n(&mine, __ATOMIC_RELAXED);
  if (s) ml_metrics_hist_add(&s->loop_lag, ns);
}
