/* Calls into the loop from any thread (ml_host_post): a queue of (fn, arg) that threads
 * push and the loop runs, oldest first. Wake-ups are coalesced: a push wakes the loop
 * (uv_async_send) only when it finds the queue empty; the loop takes the whole queue at once.
 * Ownership: the queue is the host's (ml_post_new in ml_host_new, ml_post_close when the
 * loop ends, ml_post_free in ml_host_free). An item is the queue's from a push that
 * returned 0 until its fn has run. Locking: one mutex guards the list and `closed`; the
 * loop holds it only to take the list, never while a callback runs. */
#ifndef ML_POST_H
#define ML_POST_H
#include <uv.h>

typedef struct ml_post_s ml_post_t;
typedef void (*ml_post_fn)(void *arg);

ml_post_t *ml_post_new(uv_loop_t *loop);
/* Any thread. Queues fn(arg) for the loop. Returns 0, or -1 once ml_post_close has run:
 * then fn is never called. */
int ml_post_push(ml_post_t *q, ml_post_fn fn, void *arg);
/* On the loop: refuses further pushes, runs what is queued (a callback that pushes gets
 * -1), closes the async handle. Calling it again does nothing. */
void ml_post_close(ml_post_t *q);
/* After ml_post_close; no thread may push now. The memory goes once the loop has also run
 * the handle's close callback (before or after this call). */
void ml_post_free(ml_post_t *q);
#endif
