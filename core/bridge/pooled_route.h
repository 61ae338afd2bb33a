/* Pooled routes (`{ pool = true }`, FastAPI's `def` routes): one of the two users of the
 * worker threads (workers.h). On the loop the request is copied into a job (request.h);
 * on a worker thread, that thread's own app state makes the same `req` from the copy, runs
 * the route's handler and frames the response; back on the loop the response bytes go to
 * the connection. The request's task only waits meanwhile, so a client that leaves cancels
 * the job like any other wait.
 * Ownership: a job is the request's until it is submitted, the workers' until its done
 * callback, which keeps it for reuse by the app state's next pooled request (or frees it
 * when cancelled); the jobs kept go when the app state's scheduler closes. */
#ifndef ML_POOLED_ROUTE_H
#define ML_POOLED_ROUTE_H
#include "app.h"

/* On the loop: the response to the request t runs is in its connection's output
 * (status for the access log); the request is over. */
typedef void (*ml_answered_fn)(ml_task_t *t, int status);

/* Sends the request t runs (its record is t->owner, its route match m) to the workers and
 * leaves t waiting; when the queue is full, answers 503 with Retry-After at once. Either
 * way answered(t, status) ends it, unless t is cancelled first (its client left). */
void ml_pooled_route_start(ml_app_t *a, ml_task_t *t, const ml_match_t *m,
                           ml_answered_fn answered);
#endif
