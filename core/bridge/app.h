/* An app state: one Lua state with APPDIR/app.lua loaded, its scheduler, the runtime's
 * functions it calls and its routes in a router. ml_app_new builds one alike for the event
 * loop, for each worker thread (workers.c) and for each --reload. On the loop, requests
 * reach it through dispatch.c; on a worker thread, through pooled_route.c. */
#ifndef ML_APP_H
#define ML_APP_H
#include "request.h"
#include "router.h"
#include "sched.h"
#include "static.h"
#include <lua.h>
#include <uv.h>

typedef struct ml_app_s ml_app_t;
typedef struct ml_preload_s ml_preload_t;

typedef struct {
  char *pattern;             /* "/items/{id:int}" */
  char *methods;             /* "GET" or "GET,POST" for logs */
  char *label;               /* "GET /items/{id:int}": names it in logs and to the workers */
  int handler_ref;
  int pooled;                /* { pool = true }: runs on a worker thread */
  int pool_hop;              /* pooled, behind middleware: starts as a coroutine whose
                              * innermost next(req) goes to the thread (req_pooled) */
  int noreq;                 /* its handler takes no parameter: run without building req
                              * (moonlet.runtime.dispatch builds one if it must) */
  size_t max_body;           /* { max_body = N } bytes; 0: the server's limit */
  ml_static_t *serve_static; /* app:static: the mount this route serves (C, no Lua); NULL */
  volatile int stalls;       /* times it blocked the event loop (watchdog) */
  int metric;                /* its metrics series (metrics.h), resolved by its first request
                              * on the loop; ML_ROUTE_METRIC_UNSET before; atomic (the
                              * watchdog's thread reads it) */
} ml_route_t;

#define ML_ROUTE_METRIC_UNSET (-2)

struct ml_app_s {
  /* read-only, set by ml_app_new */
  ml_sched_t sched;          /* the state's scheduler; sched.owner points back here */
  uv_loop_t *loop;
  lua_State *L;
  ml_router_t *router;
  ml_route_t *routes;
  int nroutes;
  int dispatch_ref;          /* moonlet.runtime.dispatch */
  int dispatch_noreq_ref;    /* moonlet.runtime.dispatch_noreq (routes marked noreq) */
  int req_refs_ref;          /* req's metatable and field names (ml_request_refs) */
  int resolve_ref;           /* moonlet.runtime.resolve ("module.function" -> function) */
  int after_ref;             /* moonlet.runtime.after (a request's deferred work) */
  int unrouted_ref;          /* with middleware (app:use): what answers 404/405; else 0 */
  int lifespan_ref;          /* moonlet.runtime.lifespan (the startup and shutdown hooks) */
  int app_ref;               /* the app table app.lua returned */
  int borrowed;              /* L is someone else's (ml_app_in): it stays open */
  /* public: for whoever runs requests in this state, on its thread */
  ml_buf_t scratch;          /* response body being encoded */
  ml_request_t *spare_requests;   /* request records for reuse (request.h) */
  /* on the loop only (the host sets sched.workers) */
  int requests;              /* requests in flight (their tasks); the rest are spawned */
  struct ml_pooled_spares_s *pooled_spares;   /* pooled_route.c's jobs kept for reuse */
  /* private: lifespan.c's, while the hooks of a phase run */
  void (*lifespan_done)(ml_app_t *a, int ok, const char *msg, void *ctx);
  void *lifespan_ctx;
};

/* ml_app_new's flags. ML_APP_POOL: a worker thread's state (moonlet.in_pool() is true from
 * the start, app.lua included). ML_APP_NO_WAIT: nobody may run loop but its owner (an
 * embedder's loop, ml_host_new_on_loop), so app.lua raises if it waits at load time. */
enum { ML_APP_POOL = 1, ML_APP_NO_WAIT = 2 };
/* Loads APPDIR into a new state whose scheduler runs on loop (flags: ML_APP_*); the
 * embedder's modules in preload (may be NULL) are in its package.preload. NULL with a
 * one-line message in err on failure (its handles still close on loop). */
ml_app_t *ml_app_new(uv_loop_t *loop, const char *appdir, int flags,
                     const ml_preload_t *preload, char *err, size_t errlen);
/* An app that answers every request with a 500 saying `error` (moonlet.load_error): what
 * --reload serves while the app in appdir does not load. NULL only if that fails too. */
ml_app_t *ml_app_failed(uv_loop_t *loop, const char *appdir, const char *error);
/* An app state in the existing state L (the spec runner's, for the in-process test
 * client) for the app table at idx, its scheduler on loop. ml_sched_init makes the new
 * scheduler L's (ml_sched_of): the caller restores the one before when it needs to.
 * ml_app_free leaves L open. NULL with a one-line message in err on failure. */
ml_app_t *ml_app_in(lua_State *L, int idx, uv_loop_t *loop, char *err, size_t errlen);
/* The route labelled `label` ("GET /items/{id:int}"), trying index `hint` first; NULL if
 * the app has none (a job sent before a --reload that removed it). */
const ml_route_t *ml_app_route(const ml_app_t *a, const char *label, int hint);
/* Cancels every task (spawned ones too) and closes the scheduler's handles: the app
 * answers nothing more. ml_app_free still has to follow. */
void ml_app_stop(ml_app_t *a);
/* Cancels its tasks and frees the app; its memory goes when its handles have closed on
 * the loop (run the loop afterwards). */
void ml_app_free(ml_app_t *a);

#endif
