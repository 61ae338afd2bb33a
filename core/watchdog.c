/* The watchdog thread (see watchdog.h). The loop thread publishes busy_since/busy_route
 * around every outermost resume and reports a stall over the threshold when the resume
 * ends, with its exact length; this thread samples them every few milliseconds and
 * reports a stall still going on after about a second. Both may see the same stall: an
 * atomic exchange on reported_since lets only one report it. */
#include "watchdog.h"
#include "app.h"
#include "log.h"
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define STILL_RUNNING_NS 950000000ull   /* report a stall still going on by this age */

struct ml_watchdog_s {
  pthread_t thread;
  ml_sched_t *sched;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int stop;
};

static void report(ml_sched_t *s, uint64_t since, uint64_t ns, int route, int running) {
  if (__atomic_exchange_n(&s->reported_since, since, __ATOMIC_SEQ_CST) == since) return;
  ml_app_t *a = s->app;
  const char *methods = "-", *pattern = "(a spawned task)";
  if (a && route >= 0 && route < a->nroutes) {
    methods = a->routes[route].methods;
    pattern = a->routes[route].pattern;
    __atomic_add_fetch(&a->routes[route].stalls, 1, __ATOMIC_RELAXED);
  }
  ml_log(ML_LOG_WARN, "%s %s blocked the event loop for %.0f ms%s: use moonlet.sleep or "
         "other moonlet primitives, { pool = true } or moonlet.run_in_pool for blocking work",
         methods, pattern, (double)ns / 1e6, running ? " (still running)" : "");
}

static void *watch(void *arg) {
  ml_watchdog_t *w = arg;
  /* sample four times per threshold, at most every 25 ms */
  uint64_t period_ns = w->sched->warn_ns / 4;
  if (period_ns > 25000000) period_ns = 25000000;
  if (period_ns < 1000000) period_ns = 1000000;
  pthread_mutex_lock(&w->lock);
  while (!w->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)period_ns;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&w->cond, &w->lock, &ts);
    ml_sched_t *s = w->sched;   /* ml_watchdog_watch may have moved it (reload) */
    uint64_t since = __atomic_load_n(&s->busy_since, __ATOMIC_SEQ_CST);
    int route = s->busy_route;
    if (!since) continue;
    /* A stall that ends within the first second is reported by the loop with its exact
     * length; one still going on then is reported from here, while it lasts. */
    uint64_t now = uv_hrtime();
    uint64_t due = s->warn_ns > STILL_RUNNING_NS ? s->warn_ns : STILL_RUNNING_NS;
    if (now > since && now - since > due) report(s, since, now - since, route, 1);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

ml_watchdog_t *ml_watchdog_start(ml_sched_t *s, double threshold_ms) {
  s->report_stall = report;
  if (threshold_ms <= 0) return NULL;
  s->warn_ns = (uint64_t)(threshold_ms * 1e6);
  ml_watchdog_t *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->sched = s;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  if (pthread_create(&w->thread, NULL, watch, w)) {
    ml_log(ML_LOG_WARN, "watchdog: cannot start its thread; stalls are reported when they end");
    free(w);
    return NULL;
  }
  return w;
}

void ml_watchdog_watch(ml_watchdog_t *w, ml_sched_t *s) {
  if (!w) return;
  s->report_stall = report;
  s->warn_ns = w->sched->warn_ns;
  pthread_mutex_lock(&w->lock);
  w->sched = s;
  pthread_mutex_unlock(&w->lock);
}

void ml_watchdog_stop(ml_watchdog_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->lock);
  w->stop = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w);
}
