/* An app: one Lua state with APPDIR/app.lua loaded, its routes in a router, and the tasks
 * (coroutines) running its handlers. Requests reach it through ml_app_dispatch. */
#ifndef ML_APP_H
#define ML_APP_H
#include "conn.h"
#include "router.h"
#include <lua.h>
#include <uv.h>

typedef struct ml_app_s ml_app_t;
typedef struct ml_task_s ml_task_t;

/* A request's coroutine. Tasks and their threads are reused; `gen` changes every time a
 * task is handed back so stale references (a req table kept after its request) notice. */
struct ml_task_s {
  ml_app_t *app;
  lua_State *co;             /* anchored by co_ref in the registry */
  int co_ref;
  ml_conn_t *conn;           /* NULL once the client is gone */
  uv_timer_t timer;          /* moonlet.sleep */
  void (*cancel)(ml_task_t *t);   /* cancels what the task waits on; NULL when running */
  unsigned gen;
  int route;
  ml_task_t *next_free;
  ml_task_t *next_all;
};

typedef struct {
  char *pattern;             /* "/items/{id:int}" */
  char *methods;             /* "GET" or "GET,POST" for logs */
  int handler_ref;
} ml_route_t;

struct ml_app_s {
  uv_loop_t *loop;
  lua_State *L;
  ml_router_t *router;
  ml_route_t *routes;
  int nroutes;
  int dispatch_ref;          /* moonlet.runtime.dispatch */
  int req_mt_ref;            /* metatable of req tables */
  ml_task_t *free_tasks;
  ml_task_t *all_tasks;
  ml_task_t *current;        /* the task being resumed, NULL outside a request */
  int live_tasks;
  ml_buf_t scratch;          /* response body being encoded */
  char title[128];
};

/* Loads APPDIR into a new state. NULL with a one-line message in err on failure. */
ml_app_t *ml_app_new(uv_loop_t *loop, const char *appdir, char *err, size_t errlen);
/* Frees the app once no task runs; its handles close on the loop. */
void ml_app_free(ml_app_t *a);

void ml_app_dispatch(void *ctx, ml_conn_t *c);
void ml_app_abort(void *ctx, void *task);

/* The app whose state L (or a coroutine of it) belongs to; NULL outside a served app. */
ml_app_t *ml_app_of(lua_State *L);
/* Resumes t with nargs values already pushed on t->co. */
void ml_task_resume(ml_task_t *t, int nargs);
#endif
