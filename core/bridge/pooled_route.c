/* Pooled routes (see pooled_route.h). */
#include "pooled_route.h"
#include "mem.h"
#include "server.h"
#include "log.h"
#include "lresponse.h"
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
  /* out: written on the thread */
  ml_buf_t response;         /* the response's bytes */
  int status;
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

/* Answers 500; why (NULL if it is logged already) goes to the log. */
static void failed(job_t *j, const char *why) {
  if (why) ml_log(ML_LOG_ERROR, "pool: %s", why);
  j->response.len = 0;
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
  ml_request_push(L, r, m, a->req_mt_ref);
  if (lua_pcall(L, 2, 3, 1)) {
    failed(j, lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    return;
  }
  char err[256];
  j->status = ml_lresp_build(L, 2, &j->response, &a->scratch, &j->keepalive, j->head, err,
                             sizeof err);
  if (j->status < 0) {
    char why[1024];
    snprintf(why, sizeof why, "%s: %s", route->label, err);
    failed(j, why);
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
    failed(j, load_error ? load_error : "the app did not load");
    return;
  }
  ml_request_t *r = ml_request_new(&a->spare_requests);
  ml_match_t m;
  ml_request_unpack(r, &j->request, &m);
  const ml_route_t *route = ml_app_route(a, r->route, j->route);
  if (route) {
    call_handler(a, route, r, &m, j);
  } else {
    ml_log(ML_LOG_ERROR, "%s: no such route in the reloaded code", r->route);
    failed(j, NULL);
  }
  lua_settop(a->L, 0);
  ml_request_release(r, &a->spare_requests);
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

/* Back on the loop: the response goes to the connection, the request ends. */
static void done(ml_work_t *work, int status) {
  job_t *j = JOB_OF(work);
  if (status == UV_ECANCELED) {   /* its request is gone: so may be its app */
    job_free(j);
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
