/* The worker pool for `{ pool = true }` routes and moonlet.run_in_pool (FastAPI's `def`
 * routes and run_in_executor). Threads start lazily up to `size`; each owns a LuaJIT state
 * that loads the app directory, and a private libuv loop on which the primitives block.
 * Work crosses as packed copies (copy.h): a job's `in` goes to the thread, its `out`
 * comes back, and `done` runs on the server's loop (uv_async). The loop never waits. */
#ifndef ML_POOL_H
#define ML_POOL_H
#include "buf.h"
#include "request.h"
#include <lua.h>
#include <uv.h>

typedef struct ml_pool_s ml_pool_t;
typedef struct ml_job_s ml_job_t;

enum { ML_JOB_REQUEST, ML_JOB_CALL };

struct ml_job_s {
  int kind;
  int keepalive, head;       /* ML_JOB_REQUEST: how to frame the response (keepalive is
                                0 on return if the handler closed the connection) */
  ml_buf_t in;               /* CALL: packed arguments */
  ml_request_copy_t request; /* REQUEST: the request */
  int route;                 /* REQUEST: its route's index on the loop */
  ml_buf_t out;              /* REQUEST: response bytes; CALL: packed (ok, results...) */
  int status;                /* REQUEST: the response status */
  void (*done)(ml_job_t *j); /* on the loop thread; owns j from then on */
  void *data;
  /* the pool's */
  int state, cancelled;
  ml_job_t *next, *prev;
};

ml_pool_t *ml_pool_new(uv_loop_t *loop, const char *appdir, int size, int max_queue);
/* Stops the threads (each finishes its job first; gives up waiting after `wait_s`). */
void ml_pool_free(ml_pool_t *p, double wait_s);

ml_job_t *ml_job_new(int kind);
void ml_job_free(ml_job_t *j);
/* Queues j. Returns 0, or UV_EBUSY when the queue is full (j stays the caller's). */
int ml_pool_submit(ml_pool_t *p, ml_job_t *j);
/* The caller no longer wants j: a queued job is dropped at once, a running one when it
 * ends; `done` is never called. */
void ml_pool_cancel(ml_pool_t *p, ml_job_t *j);

/* Shutting down: jobs still running no longer keep the server's loop alive. */
void ml_pool_detach(ml_pool_t *p);

/* The app's code changed: each thread loads it anew before its next job. */
void ml_pool_reload(ml_pool_t *p);

/* Installs run_in_pool and in_pool into the table on top of the stack. */
void ml_pool_open(lua_State *L);
#endif
