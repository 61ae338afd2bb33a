/* The blocking-call watchdog: notices when a coroutine holds the event loop longer than a
 * threshold — the seeds' /a mistake — and logs one line naming the route and the stall:
 * when the stall ends (the loop measures it), or, for one still going on, from a thread
 * of its own within about a second of its start. The same thread ends a stop that the
 * loop, held by a handler that never yields, cannot do (ml_watchdog_enforce). */
#ifndef ML_WATCHDOG_H
#define ML_WATCHDOG_H
#include "sched.h"
#include <stdint.h>

typedef struct ml_watchdog_s ml_watchdog_t;

/* Called on the watchdog's thread with the route holding the loop ("GET /spin") and for
 * how long; it is expected to end the process. */
typedef void (*ml_watchdog_held_fn)(void *ctx, const char *route, uint64_t held_ns);

/* Starts watching s (the loop's scheduler), registered as its monitor (sched.h).
 * threshold_ms 0: no stall warnings, but the thread still runs for ml_watchdog_enforce.
 * If the thread cannot start, stalls are still reported when they end. */
ml_watchdog_t *ml_watchdog_start(ml_sched_t *s, double threshold_ms);
/* From the moment *deadline_ns (uv_hrtime(); 0 for none) has passed, one resume may hold
 * the loop for ML_WATCHDOG_HOLD_MS at most: past that, held(ctx, ...) is called. Anyone
 * may store *deadline_ns at any time, a signal handler too, with an atomic store. */
#define ML_WATCHDOG_HOLD_MS 200
void ml_watchdog_enforce(ml_watchdog_t *w, const uint64_t *deadline_ns,
                         ml_watchdog_held_fn held, void *ctx);
/* Watches s from now on (a reloaded app's scheduler); the old one must outlive this call
 * and keeps reporting its stalls as they end (its monitor stays until ml_watchdog_stop). */
void ml_watchdog_watch(ml_watchdog_t *w, ml_sched_t *s);
void ml_watchdog_stop(ml_watchdog_t *w);
#endif
