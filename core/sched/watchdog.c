/* The watchdog thread (see watchdog.h). As the scheduler's monitor, the loop thread
 * publishes busy_since/busy_route around every outermost resume and reports a stall over
 * the threshold when the resume ends, with its exact length; this thread samples them
 * every few milliseconds and reports a stall still going on after about a second. Both may see the same stall: an
 * atomic exchange on reported_since lets only one report it. The same samples show a loop
 * still held after a stop's deadline (ml_watchdog_enforce). */
#include "watchdog.h"
#include "mem.h"
#include "app.h"
#include "log.h"
#include "metrics.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#define STILL_RUNNING_NS 950000000ull   /* report a stall still going on by this age */
#define MAX_PERIOD_NS 25000000ull       /* sample at least this often while the loop runs Lua */
#define IDLE_PERIOD_NS 150000000ull     /* and this often while it runs none */

struct ml_watchdog_s {
  ml_sched_monitor_t monitor;     /* first: the scheduler calls it (begin, end) */
  /* written by the loop's thread, read by the watchdog's: all three atomic */
  uint64_t busy_since;       /* uv_hrtime() when the running resume began, 0 if idle */
  int busy_route;
  ml_sched_t *busy_sched;    /* whose resume: the thread looks at w->sched's only */
  uint64_t reported_since;        /* the busy_since of the last stall reported (atomic) */
  uint64_t warn_ns;               /* 0: no stall warnings */
  pthread_t thread;
  int threaded;                   /* the thread runs (else stalls are reported as they end) */
  ml_sched_t *sched;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;
  const uint64_t *deadline;  /* see ml_watchdog_enforce; NULL until it is called */
  ml_watchdog_held_fn held;
  void *held_ctx;
};

static ml_route_t *route_of(ml_sched_t *s, int route) {
  ml_app_t *a = s->owner;
  return a && route >= 0 && route < a->nroutes ? &a->routes[route] : NULL;
}

/* "GET /items/{id}" for logs; a task outside any request is "- (a spawned task)". */
static const char *route_label(ml_sched_t *s, int route, char *buf, size_t len) {
  ml_route_t *r = route_of(s, route);
  snprintf(buf, len, "%s %s", r ? r->methods : "-", r ? r->pattern : "(a spawned task)");
  return buf;
}

static void report(ml_watchdog_t *w, ml_sched_t *s, uint64_t since, uint64_t ns, int route,
                   int running) {
  if (__atomic_exchange_n(&w->reported_since, since, __ATOMIC_SEQ_CST) == since) return;
  ml_route_t *r = route_of(s, route);
  if (r) {
    __atomic_add_fetch(&r->stalls, 1, __ATOMIC_RELAXED);
    ml_metrics_stall(__atomic_load_n(&r->metric, __ATOMIC_RELAXED));
  }
  char label[512];
  ml_log(ML_LOG_WARN, "%s blocked the event loop for %.0f ms%s: use moonlet.sleep or "
         "other moonlet primitives, { pool = true } or moonlet.run_in_pool for blocking work",
         route_label(s, route, label, sizeof label), (double)ns / 1e6,
         running ? " (still running)" : "");
}

/* Past the deadline of a stop, one resume (begun at `since`) has held the loop for
 * ML_WATCHDOG_HOLD_MS: the loop will not stop by itself, w->held is called. */
static void enforce(ml_watchdog_t *w, ml_sched_t *s, uint64_t since, int route, uint64_t now) {
  uint64_t due = w->deadline ? __atomic_load_n(w->deadline, __ATOMIC_SEQ_CST) : 0;
  if (!due || now < due) return;
  uint64_t from = since > due ? since : due;
  if (now - from < ML_WATCHDOG_HOLD_MS * 1000000ull) return;
  char label[512];
  w->held(w->held_ctx, route_label(s, route, label, sizeof label), now - since);
}

/* --- the monitor, on the loop's thread --- */

static void resume_begin(ml_sched_monitor_t *m, ml_sched_t *s, int route) {
  ml_watchdog_t *w = (ml_watchdog_t *)m;
  __atomic_store_n(&w->busy_sched, s, __ATOMIC_RELAXED);
  __atomic_store_n(&w->busy_route, route, __ATOMIC_RELAXED);
  __atomic_store_n(&w->busy_since, uv_hrtime(), __ATOMIC_SEQ_CST);
}

static void resume_end(ml_sched_monitor_t *m, ml_sched_t *s, int route) {
  ml_watchdog_t *w = (ml_watchdog_t *)m;
  uint64_t since = __atomic_load_n(&w->busy_since, __ATOMIC_RELAXED);   /* ours */
  __atomic_store_n(&w->busy_since, 0, __ATOMIC_SEQ_CST);
  if (!w->warn_ns) return;
  uint64_t ns = uv_hrtime() - since;
  if (ns > w->warn_ns) report(w, s, since, ns, route, 0);
}

/* --- the thread --- */

static void *watch(void *arg) {
  ml_watchdog_t *w = arg;
  prctl(PR_SET_NAME, "ml-watchdog");   /* its name in top -H, ps -L and /proc/PID/task */
  /* sample four times per threshold, at most every 25 ms */
  uint64_t period_ns = w->warn_ns ? w->warn_ns / 4 : MAX_PERIOD_NS;
  if (period_ns > MAX_PERIOD_NS) period_ns = MAX_PERIOD_NS;
  if (period_ns < 1000000) period_ns = 1000000;
  /* Found idle, the loop is looked at again after IDLE_PERIOD_NS: a resume that begins
   * meanwhile is at most that old at the next look, under the age at which this thread
   * reports it or a stop's hold is enforced, and from then on it is sampled every period.
   * An idle server's watchdog wakes 7 times a second instead of 40. */
  uint64_t wait_ns = period_ns;
  pthread_mutex_lock(&w->lock);
  while (!w->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait_ns / 1000000000ull);
    ts.tv_nsec += (long)(wait_ns % 1000000000ull);
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    ml_sched_t *s = w->sched;   /* ml_watchdog_watch may have moved it (reload) */
    uint64_t since = __atomic_load_n(&w->busy_since, __ATOMIC_SEQ_CST);
    wait_ns = since ? period_ns : IDLE_PERIOD_NS;
    int route = __atomic_load_n(&w->busy_route, __ATOMIC_RELAXED);
    /* a retired app's handler (after a reload): its labels may be gone; the loop reports
     * its stall when it ends */
    if (__atomic_load_n(&w->busy_sched, __ATOMIC_RELAXED) != s) continue;
    uint64_t now = uv_hrtime();
    if (!since || now <= since) continue;
    /* A stall that ends within the first second is reported by the loop with its exact
     * length; one still going on then is reported from here, while it lasts. */
    uint64_t due = w->warn_ns > STILL_RUNNING_NS ? w->warn_ns : STILL_RUNNING_NS;
    if (w->warn_ns && now - since > due) report(w, s, since, now - since, route, 1);
    enforce(w, s, since, route, now);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

ml_watchdog_t *ml_watchdog_start(ml_sched_t *s, double threshold_ms) {
  ml_watchdog_t *w = ml_xcalloc(1, sizeof *w);
  w->monitor.begin = resume_begin;
  w->monitor.end = resume_end;
  w->warn_ns = threshold_ms > 0 ? (uint64_t)(threshold_ms * 1e6) : 0;
  w->sched = s;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  s->monitor = &w->monitor;
  w->threaded = pthread_create(&w->thread, NULL, watch, w) == 0;
  if (!w->threaded)
    ml_log(ML_LOG_WARN, "watchdog: cannot start its thread; stalls are reported when they "
           "end, and a stop waits for a handler that never yields");
  return w;
}

void ml_watchdog_enforce(ml_watchdog_t *w, const uint64_t *deadline_ns,
                         ml_watchdog_held_fn held, void *ctx) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  w->deadline = deadline_ns;
  w->held = held;
  w->held_ctx = ctx;
  pthread_mutex_unlock(&w->lock);
}

void ml_watchdog_watch(ml_watchdog_t *w, ml_sched_t *s) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  s->monitor = &w->monitor;   /* the retired app keeps it too: its stalls are reported */
  w->sched = s;
  pthread_mutex_unlock(&w->lock);
}

void ml_watchdog_stop(ml_watchdog_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  w->sched->monitor = NULL;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  if (w->threaded) pthread_join(w->thread, NULL);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w);
}
