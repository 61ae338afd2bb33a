/* /metrics in Prometheus' text format (version 0.0.4), read from every slot of the region:
 * counters, histograms and gauges summed over the slots (a route's series are matched by
 * their template, which may sit at a different index in each slot), the process_* metrics
 * given per worker (worker="slot"), read from /proc/PID of the slot's process. */
#define _GNU_SOURCE
#include "metrics_region.h"
#include "hash.h"
#include "mem.h"
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  const char *route;         /* in the region: a published series' name */
  uint64_t requests[ML_METRICS_METHODS][ML_METRICS_CLASSES];
  uint64_t buckets[ML_METRICS_NBUCKETS], sum_ns, stalls;
} route_sum_t;

typedef struct {
  route_sum_t *v;            /* in first-seen order */
  int n;
  int *index;                /* open addressing over v: -1 empty */
  size_t cap;                /* a power of two, over twice the most names there can be */
} routes_t;

static void load(uint64_t *to, const uint64_t *cell) {
  *to += __atomic_load_n(cell, __ATOMIC_RELAXED);
}

static route_sum_t *route_get(routes_t *t, const char *route) {
  size_t len = strlen(route);
  size_t i = ml_hash(route, len) & (t->cap - 1);
  while (t->index[i] >= 0) {
    route_sum_t *r = &t->v[t->index[i]];
    if (strcmp(r->route, route) == 0) return r;
    i = (i + 1) & (t->cap - 1);
  }
  t->index[i] = t->n;
  route_sum_t *r = &t->v[t->n++];
  r->route = route;
  return r;
}

static void add_slot(routes_t *t, ml_metrics_slot_t *s) {
  uint32_t n = __atomic_load_n(&s->nseries, __ATOMIC_ACQUIRE);
  if (n > ML_METRICS_SERIES) n = ML_METRICS_SERIES;
  for (uint32_t i = 0; i < n; i++) {
    ml_metrics_series_t *x = &s->series[i];
    if (memchr(x->route, '\0', sizeof x->route) == NULL) continue;   /* never: a bad region */
    route_sum_t *r = route_get(t, x->route);
    for (int m = 0; m < ML_METRICS_METHODS; m++)
      for (int c = 0; c < ML_METRICS_CLASSES; c++) load(&r->requests[m][c], &x->requests[m][c]);
    for (int b = 0; b < ML_METRICS_NBUCKETS; b++) load(&r->buckets[b], &x->duration.buckets[b]);
    load(&r->sum_ns, &x->duration.sum_ns);
    load(&r->stalls, &x->stalls);
  }
}

/* --- the text format ------------------------------------------------------------------- */

static void family(ml_buf_t *b, const char *name, const char *type, const char *help) {
  ml_buf_addstr(b, "# HELP ");
  ml_buf_addstr(b, name);
  ml_buf_addc(b, ' ');
  ml_buf_addstr(b, help);
  ml_buf_addstr(b, "\n# TYPE ");
  ml_buf_addstr(b, name);
  ml_buf_addc(b, ' ');
  ml_buf_addstr(b, type);
  ml_buf_addc(b, '\n');
}

/* A label value: backslash, double quote and newline escaped, as the format asks. */
static void label_value(ml_buf_t *b, const char *s) {
  ml_buf_addc(b, '"');
  for (; *s; s++) {
    if (*s == '\\' || *s == '"') ml_buf_addc(b, '\\');
    if (*s == '\n') ml_buf_addstr(b, "\\n");
    else ml_buf_addc(b, *s);
  }
  ml_buf_addc(b, '"');
}

/* Sums and CPU seconds to the nanosecond; a time since the epoch to the millisecond. */
static void add_double(ml_buf_t *b, double v) {
  char num[40];
  int n = snprintf(num, sizeof num, v >= 1e6 ? "%.3f" : "%.9g", v);
  ml_buf_add(b, num, (size_t)n);
}

/* {route="..."[,extra]}, or nothing when both are NULL (extra: label pairs, escaped). */
static void add_labels(ml_buf_t *b, const char *route, const char *extra) {
  if (!route && !extra) return;
  ml_buf_addc(b, '{');
  if (route) {
    ml_buf_addstr(b, "route=");
    label_value(b, route);
    if (extra) ml_buf_addc(b, ',');
  }
  if (extra) ml_buf_addstr(b, extra);
  ml_buf_addc(b, '}');
}

/* name{route="..."[,extra]} value */
static void sample(ml_buf_t *b, const char *name, const char *route, const char *extra,
                   uint64_t v) {
  ml_buf_addstr(b, name);
  add_labels(b, route, extra);
  ml_buf_addc(b, ' ');
  ml_buf_addu(b, v);
  ml_buf_addc(b, '\n');
}

/* name_bucket (cumulative), name_sum (seconds) and name_count of one histogram, labelled
 * as sample() labels. */
static void histogram(ml_buf_t *b, const char *name, const char *route, const char *extra,
                      const uint64_t *buckets, uint64_t sum_ns) {
  char metric[96], le[192];
  uint64_t total = 0;
  snprintf(metric, sizeof metric, "%s_bucket", name);
  for (int i = 0; i < ML_METRICS_NBUCKETS; i++) {
    total += buckets[i];
    snprintf(le, sizeof le, "%s%sle=\"%s\"", extra ? extra : "", extra ? "," : "",
             i < ML_METRICS_NBUCKETS - 1 ? ml_metrics_bound_text[i] : "+Inf");
    sample(b, metric, route, le, total);
  }
  ml_buf_addstr(b, name);
  ml_buf_addstr(b, "_sum");
  add_labels(b, route, extra);
  ml_buf_addc(b, ' ');
  add_double(b, (double)sum_ns / 1e9);
  ml_buf_addc(b, '\n');
  snprintf(metric, sizeof metric, "%s_count", name);
  sample(b, metric, route, extra, total);
}

static uint64_t route_count(const route_sum_t *r) {
  uint64_t n = 0;
  for (int i = 0; i < ML_METRICS_NBUCKETS; i++) n += r->buckets[i];
  return n;
}

static void render_routes(ml_buf_t *b, const routes_t *t) {
  static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
  char extra[64];
  family(b, "moonlet_http_requests_total", "counter",
         "Requests answered, by route template, method and status class.");
  for (int i = 0; i < t->n; i++)
    for (int m = 0; m < ML_METRICS_METHODS; m++)
      for (int c = 0; c < ML_METRICS_CLASSES; c++) {
        if (!t->v[i].requests[m][c]) continue;
        snprintf(extra, sizeof extra, "method=\"%s\",code=\"%s\"",
                 m < ML_M_COUNT ? ml_method_name(m) : "other", classes[c]);
        sample(b, "moonlet_http_requests_total", t->v[i].route, extra, t->v[i].requests[m][c]);
      }
  family(b, "moonlet_http_request_duration_seconds", "histogram",
         "Time from a request's first byte read to its response's last byte written.");
  for (int i = 0; i < t->n; i++)
    if (route_count(&t->v[i]))
      histogram(b, "moonlet_http_request_duration_seconds", t->v[i].route, NULL, t->v[i].buckets,
                t->v[i].sum_ns);
  family(b, "moonlet_watchdog_stalls_total", "counter",
         "Times a route's coroutine held the event loop past --block-warn.");
  for (int i = 0; i < t->n; i++)
    if (strcmp(t->v[i].route, "(no route)") != 0)   /* no handler of its own to stall */
      sample(b, "moonlet_watchdog_stalls_total", t->v[i].route, NULL, t->v[i].stalls);
}

/* --- moonlet.jobs queues (jobs_metrics.c) ----------------------------------------------- */

typedef struct {
  const char *name;          /* in a slot, which stays mapped */
  int64_t running, length;
  uint64_t counts[ML_JOBS_COUNTERS];
  uint64_t buckets[ML_METRICS_NBUCKETS], sum_ns;
} queue_sum_t;

/* Every slot's queues summed by name; the length, sampled by each worker of a queue from
 * the same Redis stream, is the largest sample, not a sum. */
static void render_jobs(ml_buf_t *b, ml_metrics_header_t *h) {
  static const char *const counters[ML_JOBS_COUNTERS][2] = {
      {"moonlet_jobs_done_total", "Jobs that ran and succeeded, by queue."},
      {"moonlet_jobs_failed_total", "Job runs that failed (raised, timed out), by queue."},
      {"moonlet_jobs_retried_total", "Failed jobs scheduled for another attempt, by queue."},
      {"moonlet_jobs_dead_total", "Jobs moved to the dead letters, by queue."}};
  int cap = (int)h->nslots * ML_METRICS_QUEUES, n = 0;
  queue_sum_t *q = ml_xcalloc((size_t)cap, sizeof *q);
  for (int i = 0; i < (int)h->nslots; i++) {
    ml_metrics_slot_t *s = ml_metrics_slot_at(h, i);
    uint32_t nq = __atomic_load_n(&s->nqueues, __ATOMIC_ACQUIRE);
    for (uint32_t k = 0; k < nq && k < ML_METRICS_QUEUES; k++) {
      ml_metrics_queue_t *x = &s->queues[k];
      int j = 0;
      while (j < n && strcmp(q[j].name, x->name) != 0) j++;
      if (j == n) q[n++].name = x->name;
      q[j].running += __atomic_load_n(&x->running, __ATOMIC_RELAXED);
      int64_t len = __atomic_load_n(&x->length, __ATOMIC_RELAXED);
      if (len > q[j].length) q[j].length = len;
      for (int c = 0; c < ML_JOBS_COUNTERS; c++) load(&q[j].counts[c], &x->counts[c]);
      for (int c = 0; c < ML_METRICS_NBUCKETS; c++) load(&q[j].buckets[c], &x->duration.buckets[c]);
      load(&q[j].sum_ns, &x->duration.sum_ns);
    }
  }
  char label[ML_METRICS_QUEUE_MAX + 16];
  family(b, "moonlet_jobs_queue_length", "gauge",
         "Jobs in the queue's stream (waiting or running), as a worker last sampled it.");
  for (int j = 0; j < n; j++) {
    snprintf(label, sizeof label, "queue=\"%s\"", q[j].name);
    sample(b, "moonlet_jobs_queue_length", NULL, label, (uint64_t)(q[j].length > 0 ? q[j].length : 0));
  }
  family(b, "moonlet_jobs_running", "gauge", "Jobs running in the workers, by queue.");
  for (int j = 0; j < n; j++) {
    snprintf(label, sizeof label, "queue=\"%s\"", q[j].name);
    sample(b, "moonlet_jobs_running", NULL, label, (uint64_t)(q[j].running > 0 ? q[j].running : 0));
  }
  for (int c = 0; c < ML_JOBS_COUNTERS; c++) {
    family(b, counters[c][0], "counter", counters[c][1]);
    for (int j = 0; j < n; j++) {
      snprintf(label, sizeof label, "queue=\"%s\"", q[j].name);
      sample(b, counters[c][0], NULL, label, q[j].counts[c]);
    }
  }
  family(b, "moonlet_jobs_duration_seconds", "histogram",
         "Time a job's run took (done or failed), by queue.");
  for (int j = 0; j < n; j++) {
    snprintf(label, sizeof label, "queue=\"%s\"", q[j].name);
    histogram(b, "moonlet_jobs_duration_seconds", NULL, label, q[j].buckets, q[j].sum_ns);
  }
  free(q);
}

/* --- per worker: /proc/PID ------------------------------------------------------------- */

typedef struct {
  double rss_bytes, cpu_seconds, start_time;
  long fds;
} proc_t;

/* /proc/stat's btime: the boot time, seconds since the epoch (0 if unknown). */
static double boot_time(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return 0;
  char line[256];
  double bt = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "btime %lf", &bt) == 1) break;
  fclose(f);
  return bt;
}

/* The process's figures, or -1 when it is gone (or is not ours to read). */
static int proc_read(int pid, double btime, proc_t *p) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *end = strrchr(buf, ')');   /* the command name may hold spaces and parentheses */
  unsigned long utime, stime;
  unsigned long long start;
  long rss;
  /* after ") ": state (3), ..., utime (14), stime (15), ..., starttime (22), vsize, rss (24) */
  if (!end || sscanf(end + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
                     "%*d %*d %*d %*d %llu %*u %ld", &utime, &stime, &start, &rss) != 4)
    return -1;
  double tck = (double)sysconf(_SC_CLK_TCK);
  p->cpu_seconds = (double)(utime + stime) / tck;
  p->start_time = btime + (double)start / tck;
  p->rss_bytes = (double)rss * (double)sysconf(_SC_PAGESIZE);
  snprintf(path, sizeof path, "/proc/%d/fd", pid);
  DIR *d = opendir(path);
  p->fds = 0;
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') p->fds++;
    closedir(d);
  }
  return 0;
}

static void render_processes(ml_buf_t *b, ml_metrics_header_t *h) {
  static const struct { const char *name, *type, *help; } fam[] = {
      {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes, per worker."},
      {"process_cpu_seconds_total", "counter", "User and system CPU time in seconds, per worker."},
      {"process_open_fds", "gauge", "Open file descriptors, per worker."},
      {"process_start_time_seconds", "gauge",
       "Start time of the process since the epoch in seconds, per worker."}};
  int n = (int)h->nslots;
  proc_t *p = ml_xcalloc((size_t)n, sizeof *p);
  int *ok = ml_xcalloc((size_t)n, sizeof *ok);
  double btime = boot_time();
  for (int i = 0; i < n; i++) {
    int pid = __atomic_load_n(&ml_metrics_slot_at(h, i)->pid, __ATOMIC_RELAXED);
    ok[i] = pid > 0 && proc_read(pid, btime, &p[i]) == 0;
  }
  for (int f = 0; f < 4; f++) {
    family(b, fam[f].name, fam[f].type, fam[f].help);
    for (int i = 0; i < n; i++) {
      if (!ok[i]) continue;
      char head[96];
      int len = snprintf(head, sizeof head, "%s{worker=\"%d\"} ", fam[f].name, i);
      ml_buf_add(b, head, (size_t)len);
      double v = f == 0 ? p[i].rss_bytes : f == 1 ? p[i].cpu_seconds
               : f == 2 ? (double)p[i].fds : p[i].start_time;
      add_double(b, v);
      ml_buf_addc(b, '\n');
    }
  }
  free(p);
  free(ok);
}

/* --- the whole page -------------------------------------------------------------------- */

void ml_metrics_render(ml_buf_t *b) {
  static const struct { int gauge; const char *name, *help; } gauges[] = {
      {ML_G_INFLIGHT, "moonlet_http_requests_in_flight", "Requests being handled."},
      {ML_G_CONNECTIONS, "moonlet_http_connections", "Open client connections."},
      {ML_G_POOL_BUSY, "moonlet_pool_threads_busy", "Pool threads running a job."},
      {ML_G_POOL_QUEUED, "moonlet_pool_queue_length", "Jobs waiting for a pool thread."},
      {ML_G_EXECUTOR_BUSY, "moonlet_executor_threads_busy",
       "Executor threads running a run_in_pool job."},
      {ML_G_EXECUTOR_QUEUED, "moonlet_executor_queue_length",
       "run_in_pool jobs waiting for an executor thread."},
      {ML_G_DB_IN_USE, "moonlet_db_connections_in_use",
       "Database connections connecting, running a statement or leased."},
      {ML_G_DB_WAITING, "moonlet_db_waiting",
       "Database statements and acquires waiting for a connection."},
      {ML_G_HTTPC_IN_USE, "moonlet_http_client_connections_in_use",
       "HTTP-client connections carrying a request."},
      {ML_G_HTTPC_IDLE, "moonlet_http_client_connections_idle",
       "HTTP-client keep-alive connections waiting in the pool."}};
  ml_metrics_header_t *h = ml_metrics_region();
  if (!h) return;
  int nslots = (int)h->nslots;
  routes_t t = {0};
  t.cap = 1;
  while (t.cap < (size_t)nslots * ML_METRICS_SERIES * 2) t.cap <<= 1;
  t.v = ml_xcalloc((size_t)nslots * ML_METRICS_SERIES, sizeof *t.v);
  t.index = ml_xmalloc(t.cap * sizeof *t.index);
  memset(t.index, 0xff, t.cap * sizeof *t.index);
  int64_t g[ML_G_COUNT] = {0};
  uint64_t lag[ML_METRICS_NBUCKETS] = {0}, lag_sum = 0;
  for (int i = 0; i < nslots; i++) {
    ml_metrics_slot_t *s = ml_metrics_slot_at(h, i);
    add_slot(&t, s);
    for (int k = 0; k < ML_G_COUNT; k++) g[k] += __atomic_load_n(&s->gauges[k], __ATOMIC_RELAXED);
    for (int k = 0; k < ML_METRICS_NBUCKETS; k++) load(&lag[k], &s->loop_lag.buckets[k]);
    load(&lag_sum, &s->loop_lag.sum_ns);
  }
  render_routes(b, &t);
  for (size_t k = 0; k < sizeof gauges / sizeof gauges[0]; k++) {
    family(b, gauges[k].name, "gauge", gauges[k].help);
    char line[128];
    int len = snprintf(line, sizeof line, "%s %lld\n", gauges[k].name,
                       (long long)g[gauges[k].gauge]);
    ml_buf_add(b, line, (size_t)len);
  }
  family(b, "moonlet_event_loop_lag_seconds", "histogram",
         "Time the event loop spent running callbacks in one turn: how long an event that "
         "arrived meanwhile waited.");
  histogram(b, "moonlet_event_loop_lag_seconds", NULL, NULL, lag, lag_sum);
  render_jobs(b, h);
  render_processes(b, h);
  free(t.v);
  free(t.index);
}
