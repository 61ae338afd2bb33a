/* Worker threads, in the manner of libuv's threadpool (uv_queue_work): a queue of jobs and
 * threads that start lazily up to `size`. Each thread owns a libuv loop of its own, on
 * which the primitives block, and an app state (ml_app_new: APPDIR loaded into a Lua state
 * of its own). A job is a struct of its user's that embeds an ml_work_t; the thread runs
 * work(worker, job), then the loop that submitted it runs done(job, status) (uv_async).
 * The loop never waits. The workers know nothing of what a job is: pooled_route.c and
 * run_in_pool.c are their users. A host has two instances: the pool (pooled routes) and the
 * executor (run_in_pool), as FastAPI keeps `def` routes and run_in_executor apart.
 * Ownership: a job is its user's until ml_workers_submit returns 0, then the workers' until
 * done is called: the user may read and write it again only in work and done. */
#ifndef ML_WORKERS_H
#define ML_WORKERS_H
#include "list.h"
#include <uv.h>

typedef struct ml_workers_s ml_workers_t;
typedef struct ml_worker_s ml_worker_t;
typedef struct ml_work_s ml_work_t;
typedef struct ml_app_s ml_app_t;
typedef struct ml_preload_s ml_preload_t;

/* On a worker thread, outside any libuv callback (its waits may run the thread's loop). */
typedef void (*ml_work_fn)(ml_worker_t *w, ml_work_t *job);
/* On the loop: status 0 once work has run, or UV_ECANCELED after ml_workers_cancel (work
 * may have run or not); then the job is the user's again. */
typedef void (*ml_work_done_fn)(ml_work_t *job, int status);

struct ml_work_s {
  /* private: the workers' */
  ml_work_fn work;
  ml_work_done_fn done;
  int state, cancelled;      /* guarded by the workers' lock */
  ml_list_t link;            /* in the queue, then in the done list */
};

/* Which instance: names it in logs and picks its metrics gauges (ML_G_POOL_* or
 * ML_G_EXECUTOR_*). */
enum { ML_WORKERS_POOL, ML_WORKERS_EXECUTOR };

/* Threads start when jobs need them, up to `size`; `max_queue` jobs may wait for a busy
 * thread. Each thread's state gets the embedder's modules in preload (may be NULL; the
 * caller's, it must outlive the workers). kind is ML_WORKERS_*. The memory goes in
 * ml_workers_free. */
ml_workers_t *ml_workers_new(uv_loop_t *loop, const char *appdir, const ml_preload_t *preload,
                             int size, int max_queue, int kind);
/* Stops the threads (each finishes its job first; gives up waiting after `wait_s`, then
 * leaves them to the end of the process). Jobs still held get done(job, UV_ECANCELED). */
void ml_workers_free(ml_workers_t *p, double wait_s);

/* Queues job. Returns 0, or UV_EBUSY when the queue is full: then job stays the caller's
 * and neither callback is called. */
int ml_workers_submit(ml_workers_t *p, ml_work_t *job, ml_work_fn work, ml_work_done_fn done);
/* The submitter no longer wants job's result: a queued job is dropped and done(job,
 * UV_ECANCELED) runs before this returns; a running one gets it when work returns. */
void ml_workers_cancel(ml_workers_t *p, ml_work_t *job);

/* Shutting down: jobs still running no longer keep the loop alive. */
void ml_workers_detach(ml_workers_t *p);
/* The app's code changed: each thread builds its app state anew before its next job. */
void ml_workers_reload(ml_workers_t *p);

/* In work: the thread's app state, or NULL when APPDIR failed to load there (*load_error
 * then says why; it may be NULL). */
ml_app_t *ml_worker_app(ml_worker_t *w, const char **load_error);
#endif
