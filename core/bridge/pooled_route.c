/* Pooled routes (see pooled_route.h). */
#include "pooled_route.h"
#include "mem.h"
#include "server.h"
#include "log.h"
#include "lresponse.h"
#include "copy.h"
#include "error_page.h"
#include "lstate.h"
#include "response.h"
#include "workers.h"
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>

struct ml_pooled_job_s {
  ml_work_t work;
  /* in: written on the loop */
  ml_request_copy_t request;
  int route;                 /* the route's index on the loop: a hint for the thread */
  int head;                  /* a HEAD request: the response has no body */
  int values;                /* behind middleware: the handler's results come back as
                              * packed values (copy.h), not as response bytes */
  /* out: written on the thread */
  ml_buf_t response;         /* the response's bytes, or the packed results */
  int status;                /* with values: -1 if the results could not be had */
  int keepalive;             /* in: how to frame it; out: 0 if the handler closes */
  /* on the loop */
  ml_task_t *task;           /* the request's, waiting */
  ml_upload_t *upload;       /* the request's files: they stay while the handler may read
                                them, even after the client left */
  ml_answered_fn answered;
  struct ml_pooled_job_s *next_spare;
};
typedef struct ml_pooled_job_s job_t;

/* The jobs an app state keeps for reuse, on the loop; they go when its scheduler closes
 * (by then its requests are cancelled, and a cancelled job is freed, not kept). */
typedef struct ml_pooled_spares_s {
  ml_sched_hook_t on_close;
  job_t *list;
  int n;
} spares_t;

#define JOB_OF(w) ((job_t *)((char *)(w) - offsetof(job_t, work)))
#define MAX_SPARES 64
#define SPARE_BYTES (16u << 10)   /* a spare's buffers keep this much memory at most */

static void job_free(job_t *j) {
  ml_upload_free(j->upload);
  ml_request_copy_free(&j->request);
  ml_buf_free(&j->response);
  free(j);
}

static void spares_free(ml_sched_t *s, void *data) {
  spares_t *sp = data;
  while (sp->list) {
    job_t *j = sp->list;
    sp->list = j->next_spare;
    job_free(j);
  }
  ((ml_app_t *)s->owner)->pooled_spares = NULL;
  free(sp);
}

/* --- on a worker thread -------------------------------------------------------------- */

/* Answers 500; why goes to the log unless it is there already (logged). Behind
 * middleware, why goes back instead, for next(req) (runtime.lua's next_pooled). */
static void failed(job_t *j, const char *why, int logged) {
  if (!logged) ml_log(ML_LOG_ERROR, "pool: %s", why);
  j->response.len = 0;
  if (j->values) {
    ml_buf_addstr(&j->response, why);
    j->status = -1;
    return;
  }
  ml_resp_error(&j->response, 500, "Internal Server Error", NULL, j->keepalive, j->head);
  j->status = 500;
}

/* runtime.dispatch(handler, req) on the thread's own state, req made from the copy, then
 * (status, body, headers) -> response bytes; a 500 if that fails. */
static void call_handler(ml_app_t *a, const ml_route_t *route, ml_request_t *r,
                         const ml_match_t *m, job_t *j) {
  lua_State *L = a->L;
  lua_pushcfunction(L, ml_lua_traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->dispatch_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, route->handler_ref);
  ml_request_push(L, r, m, a->req_refs_ref);
  if (lua_pcall(L, 2, 3, 1)) {
    failed(j, lua_tostring(L, -1) ? lua_tostring(L, -1) : "error", 0);
    return;
  }
  char err[256];
  if (j->values) {
    j->status = ml_copy_pack(L, 2, 3, &j->response, err, sizeof err);
  } else {
    j->status = ml_lresp_build(L, 2, &j->response, &a->scratch, &j->keepalive, j->head, err,
                               sizeof err);
  }
  if (j->status < 0) {
    ml_log(ML_LOG_ERROR, "pool: %s: %s", route->label, err);
    /* in development mode the 500 says what is wrong with the response */
    if (!j->values)
      j->status = ml_error_page_build(L, r, err, &j->response, &a->scratch, &j->keepalive,
                                      j->head);
    if (j->status < 0) failed(j, err, 1);
  }
}

/* The work: the route is found by its label, so a job sent before a --reload finds its
 * route in a state that has reloaded (or fails clearly). */
static void run(ml_worker_t *w, ml_work_t *work) {
  job_t *j = JOB_OF(work);
  const char *load_error;
  ml_app_t *a = ml_worker_app(w, &load_error);
  j->response.len = 0;
  if (!a) {
    failed(j, load_error ? load_error : "the app did not load", 0);
    return;
  }
  ml_request_t *r = ml_request_new(&a->spare_requests);
  ml_match_t m;
  ml_request_unpack(r, &j->request, &m);
  const ml_route_t *route = ml_app_route(a, r->route, j->route);
  if (route) {
    call_handler(a, route, r, &m, j);
  } else {
    char why[512];
    snprintf(why, sizeof why, "%s: no such route in the reloaded code", r->route);
    ml_log(ML_LOG_ERROR, "%s", why);
    failed(j, why, 1);
  }
  lua_settop(a->L, 0);
  int after = ml_request_take_after(r);
  ml_request_release(r, &a->spare_requests);
  /* a task of the thread's state: runtime.after lets the job return (and the response go)
   * before the work runs, when the thread next runs its loop */
  ml_request_after(a->L, &a->sched, after, a->after_ref, NULL);
}

/* --- on the loop ----------------------------------------------------------------------- */

/* A job for a's next pooled request: a spare, or a new one. */
static job_t *job_take(ml_app_t *a) {
  spares_t *sp = a->pooled_spares;
  job_t *j = sp ? sp->list : NULL;
  if (j) {
    sp->list = j->next_spare;
    sp->n--;
    return j;
  }
  j = ml_xcalloc(1, sizeof *j);
  return j;
}

/* Keeps j for a's next pooled request (up to MAX_SPARES of them, without the memory a
 * large request or response made them take), or frees it. */
static void job_recycle(ml_app_t *a, job_t *j) {
  spares_t *sp = a->pooled_spares;
  if (!sp && !a->sched.closed) {
    sp = ml_xcalloc(1, sizeof *sp);
    sp->on_close.fn = spares_free;
    sp->on_close.data = sp;
    ml_sched_on_close(&a->sched, &sp->on_close);
    a->pooled_spares = sp;
  }
  if (!sp || sp->n == MAX_SPARES) {
    job_free(j);
    return;
  }
  ml_upload_free(j->upload);
  j->upload = NULL;
  ml_request_copy_trim(&j->request, SPARE_BYTES);
  ml_buf_reset(&j->response, SPARE_BYTES);
  j->next_spare = sp->list;
  sp->list = j;
  sp->n++;
}

/* Back on the loop, behind middleware: the results go to the waiting next(req), or nil
 * and why the request failed (logged already), for which next_pooled answers the 500. */
static void done_values(job_t *j) {
  ml_task_t *t = j->task;
  int n = j->status < 0 ? -1 : ml_copy_unpack(t->co, j->response.data, j->response.len);
  if (n != 3) {
    if (n > 0) lua_pop(t->co, n);
    lua_pushnil(t->co);
    if (j->status < 0) lua_pushlstring(t->co, j->response.data, j->response.len);
    else lua_pushliteral(t->co, "the pool thread's results could not be read");
    lua_pushnil(t->co);
  }
  job_recycle(t->sched->owner, j);
  ml_task_wake(t, 3);
}

/* Back on the loop: the response goes to the connection, the request ends. */
static void done(ml_work_t *work, int status) {
  job_t *j = JOB_OF(work);
  if (status == UV_ECANCELED) {   /* its request is gone: so may be its app */
    job_free(j);
    return;
  }
  if (j->values) {
    done_values(j);
    return;
  }
  ml_task_t *t = j->task;
  ml_server_conn_t *c = ((ml_request_t *)t->owner)->conn;
  ml_buf_add(&c->out, j->response.data, j->response.len);
  if (!j->keepalive) ml_server_conn_close_after(c);
  int code = j->status;
  ml_answered_fn answered = j->answered;
  job_recycle(t->sched->owner, j);
  answered(t, code);
}

/* The task's cancel: the client left (or the app stops) while the job is out. */
static void cancel(ml_task_t *t) {
  ml_workers_cancel(t->sched->workers, t->wait);
}

/* 503 with Retry-After: the queue is full. */
static void respond_busy(ml_server_conn_t *c, const char *route) {
  static const char body[] = "{\"detail\":\"Service Unavailable\"}";
  ml_resp_begin(&c->out, 503);
  ml_resp_header(&c->out, "Content-Type", 12, "application/json", 16);
  ml_resp_header(&c->out, "Retry-After", 11, "1", 1);
  ml_resp_end(&c->out, 503, sizeof body - 1, ml_server_conn_keepalive(c));
  if (!c->head) ml_buf_add(&c->out, body, sizeof body - 1);
  ml_log(ML_LOG_WARN, "%s: pool queue full, answered 503", route);
}

void ml_pooled_route_start(ml_app_t *a, ml_task_t *t, const ml_match_t *m,
                           ml_answered_fn answered) {
  ml_request_t *r = t->owner;
  ml_server_conn_t *c = r->conn;
  job_t *j = job_take(a);
  ml_request_pack(r, m, &j->request);
  j->values = 0;
  j->upload = r->upload;
  r->upload = NULL;
  j->route = m->route;
  j->head = c->head;
  j->keepalive = ml_server_conn_keepalive(c);
  j->task = t;
  j->answered = answered;
  if (!a->sched.workers || ml_workers_submit(a->sched.workers, &j->work, run, done)) {
    job_recycle(a, j);
    respond_busy(c, r->route);
    answered(t, 503);
    return;
  }
  t->cancel = cancel;
  t->wait = &j->work;
}

/* req_pooled(r, g) -> status, body, headers | nil, why: the innermost next(req) of a pooled
 * route behind middleware. Sends the request (as received) to the workers and waits in the
 * request's coroutine for the handler's results (nil and why, logged, when there are none
 * to give: a result that could not be copied back, the app not loaded on the thread); a
 * full queue gives 503 at once. */
static int l_req_pooled(lua_State *L) {
  ml_request_t *r = ml_request_check(L);
  ml_task_t *t = ml_task_current(L);
  ml_app_t *a = t->sched->owner;
  job_t *j = job_take(a);
  if (!r->match) return luaL_error(L, "req_pooled: not a pooled route's request");
  ml_request_pack(r, r->match, &j->request);
  j->upload = r->upload;   /* the files stay while the thread's handler may read them */
  r->upload = NULL;
  j->values = 1;
  j->route = r->match->route;
  j->head = 0;
  j->keepalive = 1;
  j->task = t;
  j->answered = NULL;
  if (!a->sched.workers || ml_workers_submit(a->sched.workers, &j->work, run, done)) {
    job_recycle(a, j);
    ml_log(ML_LOG_WARN, "%s: pool queue full, answered 503", r->route);
    lua_pushinteger(L, 503);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "Service Unavailable");
    lua_setfield(L, -2, "detail");
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "1");
    lua_setfield(L, -2, "retry-after");
    return 3;
  }
  return ml_task_wait(L, t, cancel, &j->work);
}

void ml_pooled_route_open(lua_State *L) {
  lua_pushcfunction(L, l_req_pooled);
  lua_setfield(L, -2, "req_pooled");
}
