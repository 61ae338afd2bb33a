/* Pooled routes (`{ pool = true }`, FastAPI's `def` routes): one of the two users of the
 * worker threads (workers.h). On the loop the request is copied into a job (request.h);
 * on a worker thread, that thread's own app state makes the same `req` from the copy, runs
 * the route's handler and frames the response; back on the loop the response bytes go to
 * the connection. The request's task only waits meanwhile, so a client that leaves cancels
 * the job like any other wait.
 * Ownership: a job is the request's until it is submitted, the workers' until its done
 * callback, which hands it back to the app's spares (or frees it when cancelled). */
#ifndef ML_POOLED_ROUTE_H
#define ML_POOLED_ROUTE_H
#include "app.h"

/* Sends the request t runs (its record is t->owner, its route match m) to the workers and
 * leaves t waiting; when the queue is full, answers 503 with Retry-After at once. Either
 * way the request ends through ml_app_answered. */
void ml_pooled_route_start(ml_app_t *a, ml_task_t *t, const ml_match_t *m);
/* Frees the jobs the app keeps for reuse (when the app is freed). */
void ml_pooled_route_free_spares(ml_app_t *a);
#endif
