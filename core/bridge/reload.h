/* --reload: watches the app directory and calls back when a .lua file changes, appears
 * or disappears: with file system events (inotify, a watch per directory) and a short
 * debounce, or by polling where events are not available (see reload.c). */
#ifndef ML_RELOAD_H
#define ML_RELOAD_H
#include <uv.h>

typedef struct ml_reload_s ml_reload_t;

/* on_change runs on the loop. NULL if the directory cannot be read. */
ml_reload_t *ml_reload_start(uv_loop_t *loop, const char *appdir, void (*on_change)(void *ctx),
                             void *ctx);
/* Stops watching; the memory goes when its handles have closed (run the loop). */
void ml_reload_stop(ml_reload_t *r);
#endif
