/* The metrics region's layout (metrics.h), private to core/prod/metrics*.c: a header, then
 * nslots slots of the same size. Every cell is written with relaxed atomics by its slot's
 * process and read the same way by the renderer; a series' name is written before the
 * release store of nseries that publishes it, and read after an acquire load. */
#ifndef ML_METRICS_REGION_H
#define ML_METRICS_REGION_H
#include "metrics.h"
#include "router.h"
#include <stdint.h>

#define ML_METRICS_MAGIC 0x6d6c6d6574726963ull   /* "mlmetric" */
#define ML_METRICS_NBUCKETS 14                    /* 13 bounds, then +Inf */
#define ML_METRICS_METHODS (ML_M_COUNT + 1)       /* ML_M_*, then any other method */
#define ML_METRICS_CLASSES 5                      /* 1xx .. 5xx */

/* the histograms' upper bounds, in seconds and in nanoseconds */
extern const char *const ml_metrics_bound_text[ML_METRICS_NBUCKETS - 1];
extern const uint64_t ml_metrics_bound_ns[ML_METRICS_NBUCKETS - 1];

typedef struct {
  uint64_t buckets[ML_METRICS_NBUCKETS];   /* per bucket, not cumulative (the reader sums) */
  uint64_t sum_ns;
} ml_metrics_hist_t;

typedef struct {
  char route[ML_METRICS_ROUTE_MAX];        /* NUL-terminated template, "(no route)", ... */
  uint64_t requests[ML_METRICS_METHODS][ML_METRICS_CLASSES];
  ml_metrics_hist_t duration;
  uint64_t stalls;
} ml_metrics_series_t;

/* A moonlet.jobs queue's figures (jobs_metrics.c): the queue is named when a worker of this
 * slot starts consuming it, or on its first figure. */
typedef struct {
  char name[ML_METRICS_QUEUE_MAX];         /* NUL-terminated queue name */
  int64_t running;                         /* gauge: jobs running */
  int64_t length;                          /* gauge: the stream's length, sampled (XLEN) */
  uint64_t counts[ML_JOBS_COUNTERS];       /* done, failed, retried, dead */
  ml_metrics_hist_t duration;              /* runs, done or failed */
} ml_metrics_queue_t;

typedef struct {
  int32_t pid;                             /* the process recording into it; 0: none now */
  uint32_t nseries;                        /* series[0 .. nseries) are named */
  int64_t gauges[ML_G_COUNT];
  ml_metrics_hist_t loop_lag;
  ml_metrics_series_t series[ML_METRICS_SERIES];
  uint32_t nqueues;                        /* queues[0 .. nqueues) are named */
  ml_metrics_queue_t queues[ML_METRICS_QUEUES];
} ml_metrics_slot_t;

typedef struct {
  uint64_t magic;
  uint32_t nslots, pad;
  uint64_t slot_size;                      /* sizeof (ml_metrics_slot_t) of its maker */
  char pad2[40];                           /* the slots start on a cache line */
} ml_metrics_header_t;

/* The slot this process records into; NULL: metrics off. */
ml_metrics_slot_t *ml_metrics_mine(void);
/* Counts ns in h's bucket and sum (relaxed atomic adds). */
void ml_metrics_hist_add(ml_metrics_hist_t *h, uint64_t ns);

/* The region mapped in this process (NULL: none), and its slot count. */
ml_metrics_header_t *ml_metrics_region(void);
static inline ml_metrics_slot_t *ml_metrics_slot_at(ml_metrics_header_t *h, int i) {
  return (ml_metrics_slot_t *)((char *)h + sizeof *h) + i;
}
#endif
