/* --reload: watches the app directory and calls back when a .lua file changes, appears
 * or disappears. It polls (stat of every .lua file below APPDIR, every 250 ms): simple,
 * recursive, and cheap for the size of an app in development. */
#ifndef ML_RELOAD_H
#define ML_RELOAD_H
#include <uv.h>

typedef struct ml_reload_s ml_reload_t;

/* on_change runs on the loop. NULL if the directory cannot be read. */
ml_reload_t *ml_reload_start(uv_loop_t *loop, const char *appdir, void (*on_change)(void *ctx),
                             void *ctx);
/* Stops watching; the memory goes when the timer has closed (run the loop). */
void ml_reload_stop(ml_reload_t *r);
#endif
