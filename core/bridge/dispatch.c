/* A request on the loop (see dispatch.h). */
#include "dispatch.h"
#include "app.h"
#include "log.h"
#include "lresponse.h"
#include "multipart.h"
#include "pooled_route.h"
#include "response.h"

/* Hands back a request's record and task (see ml_app_t.requests). */
static void request_release(ml_task_t *t, int reusable) {
  ml_app_t *a = t->sched->owner;
  ml_request_release(t->owner, &a->spare_requests);
  a->requests--;
  ml_task_release(t, reusable);
}

/* The response to the request t runs is in its connection's output: the request is over
 * and the connection goes on. */
static void answered(ml_task_t *t, int status) {
  ml_server_conn_t *c = ((ml_request_t *)t->owner)->conn;
  request_release(t, 1);
  ml_server_conn_done(c, status);
}

static void respond_500(ml_task_t *t, int reusable) {
  ml_server_conn_t *c = ((ml_request_t *)t->owner)->conn;
  request_release(t, reusable);
  ml_resp_error(&c->out, 500, "Internal Server Error", NULL, ml_server_conn_keepalive(c), c->head);
  ml_server_conn_done(c, 500);
}

/* The coroutine returned (status, body, headers): serialize them into the connection. */
static void finish(ml_task_t *t) {
  ml_app_t *a = t->sched->owner;
  ml_request_t *r = t->owner;
  ml_server_conn_t *c = r->conn;
  char err[200];
  int keepalive = ml_server_conn_keepalive(c);
  int status = ml_lresp_build(t->co, 1, &c->out, &a->scratch, &keepalive, c->head, err,
                              sizeof err);
  if (status < 0) {
    ml_log(ML_LOG_ERROR, "%s: %s", r->route, err);
    respond_500(t, 1);
    return;
  }
  if (!keepalive) ml_server_conn_close_after(c);
  answered(t, status);
}

/* on_done of a coroutine route's task (see task.h) */
static void request_done(ml_task_t *t, int st) {
  ml_request_t *r = t->owner;
  if (!r->conn) {   /* the client left while the handler ran: nothing to answer */
    request_release(t, st == 0);
    return;
  }
  if (st == 0) {
    finish(t);
    return;
  }
  ml_log(ML_LOG_ERROR, "%s: %s", r->route,
         lua_tostring(t->co, -1) ? lua_tostring(t->co, -1) : "error");
  respond_500(t, 0);
}

/* A coroutine route: runtime.dispatch(handler, req) in the task's coroutine. */
static void run_coroutine(ml_app_t *a, ml_task_t *t, const ml_route_t *route,
                          const ml_match_t *m) {
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->dispatch_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);
  ml_request_push(co, t->owner, m, a->req_mt_ref);
  ml_task_resume(t, 2);
}

/* 404 or 405 (with Allow) for a request no route takes. */
static void respond_unrouted(ml_server_conn_t *c, int rc, unsigned allow_mask) {
  char allow[96];
  int status = rc == ML_ROUTE_BAD_METHOD ? 405 : 404;
  if (status == 405) ml_router_allow_header(allow_mask, allow, sizeof allow);
  ml_resp_error(&c->out, status, status == 405 ? "Method Not Allowed" : "Not Found",
                status == 405 ? allow : NULL, ml_server_conn_keepalive(c), c->head);
  ml_server_conn_done(c, status);
}

/* Runs the route of the request t was made for: in t's coroutine, or on the workers. A
 * request whose upload could not be written is answered 500 (the reason is logged). */
static void run_route(ml_app_t *a, ml_task_t *t, const ml_match_t *m) {
  ml_request_t *r = t->owner;
  const ml_route_t *route = &a->routes[m->route];
  if (r->upload && ml_upload_failed(r->upload)) respond_500(t, 1);
  else if (route->pooled) ml_pooled_route_start(a, t, m, answered);
  else run_coroutine(a, t, route, m);
}

/* The request's upload is on disk: its route runs (matched again, the same way). */
static void upload_flushed(void *arg) {
  ml_task_t *t = arg;
  ml_app_t *a = t->sched->owner;
  ml_request_t *r = t->owner;
  ml_match_t m;
  t->cancel = NULL;
  t->wait = NULL;
  ml_router_match(a->router, r->conn->http.method, r->path, r->path_len, &m);
  run_route(a, t, &m);
}

/* The task's cancel while it waits for its upload's writes (the client left). */
static void upload_wait_cancel(ml_task_t *t) {
  ml_upload_wait_cancel(((ml_request_t *)t->owner)->upload);
}

void ml_dispatch(void *ctx, ml_server_conn_t *c) {
  ml_app_t *a = ctx;
  ml_request_t *r = ml_request_new(&a->spare_requests);
  ml_request_from_conn(r, c);
  ml_match_t m;
  int rc = ml_router_match(a->router, c->http.method, r->path, r->path_len, &m);
  if (rc != ML_ROUTE_OK) {
    ml_request_release(r, &a->spare_requests);
    respond_unrouted(c, rc, m.allow);
    return;
  }
  const ml_route_t *route = &a->routes[m.route];
  r->route = route->label;
  ml_task_t *t = ml_task_new(&a->sched, request_done, r);
  a->requests++;
  t->route = m.route;
  c->task = t;
  if (r->upload && ml_upload_wait(r->upload, upload_flushed, t)) {   /* files still written */
    t->cancel = upload_wait_cancel;
    t->wait = r->upload;
    return;
  }
  run_route(a, t, &m);
}

/* The body hook (server.h): a route's max_body applies to its requests; a
 * multipart/form-data body for a route goes to an upload as it arrives. A body for no
 * route stays under the server's limit, and is answered 404 or 405 once read. */
int ml_dispatch_body(void *ctx, ml_server_conn_t *c, const char **detail) {
  ml_app_t *a = ctx;
  ml_http_t *h = &c->http;
  size_t plen, clen;
  const char *path = ml_request_target_path(ml_http_url(h), h->url_len, &plen);
  ml_match_t m;
  if (ml_router_match(a->router, h->method, path, plen, &m) != ML_ROUTE_OK) return 0;
  const ml_route_t *route = &a->routes[m.route];
  if (route->max_body) h->max_body = route->max_body;
  const char *ctype = ml_http_header(h, "content-type", &clen);
  ml_buf_t boundary = {0};
  if (!ctype || !ml_multipart_content_type(ctype, clen, &boundary)) return 0;
  if (boundary.len == 0) {
    ml_buf_free(&boundary);
    *detail = "Malformed multipart body: no boundary in its Content-Type";
    return 400;
  }
  h->upload = ml_upload_new(a->loop, boundary.data, boundary.len, ml_server_conn_hold, c);
  ml_buf_free(&boundary);
  return 0;
}

void ml_dispatch_abort(void *ctx, void *task) {
  (void)ctx;
  ml_task_t *t = task;
  ml_request_end(t->owner);   /* its req may read no more; request_done sees no conn */
  if (t->sched->current == t) return;   /* running now: request_done drops it */
  ml_task_cancel(t);
  request_release(t, 0);
}
