/* The blocking-call watchdog: a thread that notices when a coroutine holds the event loop
 * longer than a threshold — the seeds' /a mistake — and logs one line naming the route,
 * while the stall is still going on. Stalls shorter than its polling period are reported
 * by the loop itself when the resume ends (ml_watchdog_after_resume). */
#ifndef ML_WATCHDOG_H
#define ML_WATCHDOG_H
#include "task.h"
#include <stdint.h>

typedef struct ml_watchdog_s ml_watchdog_t;

/* Starts watching s (the loop's scheduler). threshold_ms 0 disables it: returns NULL. */
ml_watchdog_t *ml_watchdog_start(ml_sched_t *s, double threshold_ms);
/* Watches s from now on (a reloaded app's scheduler); the old one must outlive this call. */
void ml_watchdog_watch(ml_watchdog_t *w, ml_sched_t *s);
void ml_watchdog_stop(ml_watchdog_t *w);
#endif
