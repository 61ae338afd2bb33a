/* The blocking-call watchdog: notices when a coroutine holds the event loop longer than a
 * threshold — the seeds' /a mistake — and logs one line naming the route and the stall:
 * when the stall ends (the loop measures it), or, for one still going on, from a thread
 * of its own within about a second of its start. */
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
