/* Prometheus metrics (README "Metrics"). They live in a shared-memory region (shm.h) of
 * slots, one per worker process (one in all without a supervisor): a process records into
 * its own slot only, with relaxed atomic adds (the loop's thread, pool threads and the
 * watchdog's all write some of it); whoever serves /metrics reads every slot and sums
 * them, but for the process_* metrics, given per worker. The region is addressed by
 * indices, never pointers: each process maps it at an address of its own.
 *
 * Recording is cheap and does nothing while no slot is attached (metrics off): a request
 * costs a few atomic adds into cells found by its route's series index, which the route
 * resolves once (ml_metrics_series) by its template, never by the raw path, so the number
 * of series stays bounded (ML_METRICS_SERIES a slot, then the overflow series). A template
 * seen again (a reload, a slot used by a new worker) gets its series back: counters keep
 * counting. */
#ifndef ML_METRICS_H
#define ML_METRICS_H
#include "buf.h"
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* --- the hand-off to the supervisor (--workers) ---------------------------------------- */

/* Creates the region for nslots workers, maps it here; returns its fd or -1 + err. The fd
 * is close-on-exec (shm.h): clear it, or let uv_spawn pass it, to hand it on. */
int ml_metrics_region_create(int nslots, char *err, size_t errlen);
/* Worker: maps the region behind fd, records into slot `slot` from now on (its gauges
 * start at zero; its counters go on from what the slot holds). Returns 0 or -1 + err. */
int ml_metrics_region_attach(int fd, int slot, char *err, size_t errlen);
/* Serves GET /metrics for the whole region on loop (the supervisor's loop, or the host's
 * when there is no supervisor), on a listening socket of its own: 404 for other paths, 405
 * for other methods, 400 for what does not parse. One server a process. Returns 0, or -1
 * with err (no region, a bad host, the port in use). */
int ml_metrics_serve(uv_loop_t *loop, const char *host, int port, char *err, size_t errlen);
/* The supervisor, when a worker's process is gone: zero that slot's gauges (in-flight,
 * connections, busy...) so a killed worker leaves no stale gauge; counters stay. */
void ml_metrics_slot_gone(int slot);

/* --- the host's -------------------------------------------------------------------------- */

/* A host without a supervisor: a region of one slot, recorded into here. Returns 0 (the
 * host serves it), 1 when this process records into a supervisor's region already (a
 * worker: the supervisor serves the metrics), or -1 + err. */
int ml_metrics_region_own(char *err, size_t errlen);

/* ml_metrics_serve's port (after port 0: the bound one); -1 when it does not serve. */
int ml_metrics_port(void);
/* Closes ml_metrics_serve's listener and connections (their memory goes in their close
 * callbacks, when the loop runs them). Nothing when it does not serve. */
void ml_metrics_serve_close(void);
/* 1 when this process records into a slot. */
int ml_metrics_on(void);
/* The text exposition format (version 0.0.4) of the whole region, appended to b. */
void ml_metrics_render(ml_buf_t *b);

/* --- recording: any thread, nothing when off --------------------------------------------- */

#define ML_METRICS_SERIES 512      /* route series a slot holds, the two below included */
#define ML_METRICS_ROUTE_MAX 192   /* a longer template goes to the overflow series */
enum { ML_METRICS_NO_ROUTE, ML_METRICS_OVERFLOW };   /* route="(no route)", "(other)" */

/* Gauges: the slot's current values, moved by deltas. */
enum {
  ML_G_INFLIGHT,             /* requests dispatched, not answered yet */
  ML_G_CONNECTIONS,          /* open client connections */
  ML_G_POOL_BUSY,            /* pool threads running a job */
  ML_G_POOL_QUEUED,          /* jobs waiting for a pool thread */
  ML_G_EXECUTOR_BUSY,        /* executor threads running a run_in_pool job */
  ML_G_EXECUTOR_QUEUED,      /* run_in_pool jobs waiting for an executor thread */
  ML_G_DB_IN_USE,            /* database connections connecting, running or leased */
  ML_G_DB_WAITING,           /* database jobs waiting for a connection */
  ML_G_HTTPC_IN_USE,         /* HTTP-client connections carrying a request */
  ML_G_HTTPC_IDLE,           /* HTTP-client keep-alive connections in the pool */
  ML_G_COUNT
};
void ml_metrics_gauge(int gauge, int delta);

/* The series of a route template ("/items/{id}"), made on first use: its index, or -1
 * when metrics are off. Not every thread: the loop's (series are made under a lock, but
 * a route keeps the index it was given). */
int ml_metrics_series(const char *route_template);
/* A request's end: series, method (ML_M_*, or -1 for another), status, and its time from
 * its first byte read to its last byte written. */
void ml_metrics_request(int series, int method, int status, uint64_t ns);
/* The watchdog saw the route of series block the loop. */
void ml_metrics_stall(int series);
/* One turn of the loop spent ns running callbacks (what an event may wait for). */
void ml_metrics_loop_turn(uint64_t ns);

/* moonlet.jobs queues (jobs_metrics.c): a slot holds ML_METRICS_QUEUES of them; more are
 * not recorded. */
#define ML_METRICS_QUEUES 16
#define ML_METRICS_QUEUE_MAX 64    /* a longer name is not recorded */
enum { ML_JOBS_DONE, ML_JOBS_FAILED, ML_JOBS_RETRIED, ML_JOBS_DEAD, ML_JOBS_COUNTERS };
/* The index of queue `name` in this process's slot, made on first use; -1 when metrics
 * are off, the name is too long or the table is full. The loop's thread only. */
int ml_metrics_queue(const char *name);
/* Installs core.jobs_metric_queue(name) -> index | nil and core.jobs_metric(index, kind,
 * value) (kind: "running" delta, "length" value, "done"/"failed" duration in seconds,
 * "retried", "dead") into the table on top of L's stack: lua/moonlet/jobs.lua records with
 * them. */
struct lua_State;
void ml_jobs_metrics_open(struct lua_State *L);
#endif
