/* ml_host_emit: an event from any thread to the handler the app registered with
 * app:on_event(name, fn), run on the loop as a coroutine with the JSON value decoded
 * (runtime.lua's `event` finds the handler, decodes, calls it and logs its errors).
 * The event travels through the host's post queue (post.h); the handler is looked up
 * when it arrives, in the app serving then (*app: after a --reload, the new code's). */
#ifndef ML_EVENTS_H
#define ML_EVENTS_H
#include "post.h"

typedef struct ml_app_s ml_app_t;

/* Any thread. Copies event and json (NULL: the handler gets nil) and queues them.
 * Returns 0, or -1: json is not one JSON text (logged, as a warning), or the queue is
 * closed. `app` is read on the loop only and must outlive the queue. */
int ml_events_emit(ml_post_t *q, ml_app_t *const *app, const char *event, const char *json);
#endif
