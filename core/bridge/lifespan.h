/* Lifespan hooks: the functions app:on_startup and app:on_shutdown collected, run by
 * moonlet.runtime.lifespan in one coroutine task of an app state on the loop, so they may
 * wait (sleep, db, HTTP client) like a handler. Only the host runs them, and only in the
 * loop's app states: a worker thread's state has the hooks but never runs them. */
#ifndef ML_LIFESPAN_H
#define ML_LIFESPAN_H
#include "app.h"

typedef enum { ML_LIFESPAN_STARTUP, ML_LIFESPAN_SHUTDOWN } ml_lifespan_phase_t;

/* The hooks ended: ok 1, or 0 with msg the first startup error, traceback included (a
 * shutdown hook's error is logged and the next hook runs, so shutdown always ends ok).
 * msg is valid during the call only. The app's task is released already. */
typedef void (*ml_lifespan_done_fn)(ml_app_t *a, int ok, const char *msg, void *ctx);

/* Starts the hooks of phase in order, one after the other, in a new task of a; done runs
 * when they end, perhaps before this returns. If a is stopped first (ml_app_stop), the
 * task is cancelled and done never runs. */
void ml_lifespan_start(ml_app_t *a, ml_lifespan_phase_t phase, ml_lifespan_done_fn done,
                       void *ctx);
/* The number of hooks a has for phase. */
int ml_lifespan_count(ml_app_t *a, ml_lifespan_phase_t phase);
#endif
