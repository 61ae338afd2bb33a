/* A request on the loop (see dispatch.h). */
#include "dispatch.h"
#include "app.h"
#include "error_page.h"
#include "log.h"
#include "mem.h"
#include "lresponse.h"
#include "metrics.h"
#include "multipart.h"
#include "pooled_route.h"
#include "response.h"
#include "websocket.h"
#include <stdio.h>

/* Hands back a request's record and task (see ml_app_t.requests); returns the request's
 * after-work (see ml_request_after), which the caller starts once the response is out. */
static int request_release(ml_task_t *t, int reusable) {
  ml_app_t *a = t->sched->owner;
  int after = ml_request_take_after(t->owner);
  ml_request_release(t->owner, &a->spare_requests);
  a->requests--;
  ml_task_release(t, reusable);
  return after;
}

static void run_after(ml_app_t *a, int after, const char *why) {
  if (after) ml_request_after(a->L, &a->sched, after, a->after_ref, why);
}

/* The response to the request t runs is in its connection's output: the request is over
 * and the connection goes on; then the request's after-work starts. */
static void answered(ml_task_t *t, int status) {
  ml_app_t *a = t->sched->owner;
  ml_server_conn_t *c = ((ml_request_t *)t->owner)->conn;
  int after = request_release(t, 1);
  ml_server_conn_done(c, status);
  run_after(a, after, NULL);
}

/* Answers 500 for why (logged already). In development mode, when L can build it (the
 * task's finished coroutine, see error_page.h), the 500 carries why; L NULL: never. */
static void respond_500(ml_task_t *t, lua_State *L, int reusable, const char *why) {
  ml_app_t *a = t->sched->owner;
  ml_request_t *r = t->owner;
  ml_server_conn_t *c = r->conn;
  int keepalive = ml_server_conn_keepalive(c);
  if (!L || ml_error_page_build(L, r, why, &c->out, &a->scratch, &keepalive, c->head) < 0)
    ml_resp_error(&c->out, 500, "Internal Server Error", NULL, keepalive, c->head);
  else if (!keepalive)
    ml_server_conn_close_after(c);
  int after = request_release(t, reusable);
  ml_server_conn_done(c, 500);
  run_after(a, after, why);
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
    respond_500(t, t->co, 1, err);
    return;
  }
  if (!keepalive) ml_server_conn_close_after(c);
  answered(t, status);
}

/* on_done of a coroutine route's task (see task.h) */
static void request_done(ml_task_t *t, int st) {
  ml_request_t *r = t->owner;
  if (r->ws) {   /* a WebSocket's handler ended: no HTTP response, the socket closes */
    ml_app_t *a = t->sched->owner;
    ml_ws_t *ws = r->ws;
    r->ws = NULL;
    if (st) ml_log(ML_LOG_ERROR, "%s: %s", r->route, lua_tostring(t->co, -1));
    int after = request_release(t, st == 0);
    ml_websocket_end(ws);
    run_after(a, after, NULL);
    return;
  }
  if (!r->conn) {   /* the client left while the handler ran: nothing to answer */
    ml_app_t *a = t->sched->owner;
    run_after(a, request_release(t, st == 0), "client disconnected");
    return;
  }
  if (r->stream) {   /* a response in pieces (stream.h) is out already, ended by stream.lua */
    if (st != 0) {
      const char *msg = lua_tostring(t->co, -1);
      ml_log(ML_LOG_ERROR, "%s: %s", r->route, msg ? msg : "error");
      ml_stream_end(r, 0);
    }
    answered(t, ml_stream_status(r->stream));
    return;
  }
  if (st == 0) {
    finish(t);
    return;
  }
  char msg[512];   /* t->co goes with t */
  snprintf(msg, sizeof msg, "%s", lua_tostring(t->co, -1) ? lua_tostring(t->co, -1) : "error");
  ml_log(ML_LOG_ERROR, "%s: %s", r->route, msg);
  respond_500(t, NULL, 0, msg);
}

/* A coroutine route: runtime.dispatch(handler, req) in the task's coroutine. */
static void run_coroutine(ml_app_t *a, ml_task_t *t, const ml_route_t *route,
                          const ml_match_t *m) {
  lua_State *co = t->co;
  if (route->noreq) {   /* a handler that reads no req: none is built (callgrind, /hello:
                         * 9.1k -> 7.4k instructions per request) */
    ml_request_t *r = t->owner;
    lua_rawgeti(co, LUA_REGISTRYINDEX, a->dispatch_noreq_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);
    lua_pushlightuserdata(co, r);
    lua_pushnumber(co, r->gen);
    ml_task_resume(t, 3);
    return;
  }
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->dispatch_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, route->handler_ref);
  ml_request_push(co, t->owner, m, a->req_refs_ref);
  ml_task_resume(t, 2);
}

/* With middleware, a request no route takes goes through it too (CORS answers preflights
 * for paths without an OPTIONS route): runtime.unrouted's chain ends in the 404 or 405,
 * which it finds in req._status and req._allow. */
static void run_unrouted(ml_app_t *a, ml_server_conn_t *c, ml_request_t *r, int rc,
                         unsigned allow_mask) {
  static const char label[] = "(no route)";
  r->route = label;
  ml_task_t *t = ml_task_new(&a->sched, request_done, r);
  a->requests++;
  t->route = -1;
  c->task = t;
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->dispatch_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->unrouted_ref);
  ml_match_t none;
  none.nparams = 0;
  ml_request_push(co, r, &none, a->req_refs_ref);
  lua_pushinteger(co, rc == ML_ROUTE_BAD_METHOD ? 405 : 404);
  lua_setfield(co, -2, "_status");
  if (rc == ML_ROUTE_BAD_METHOD) {
    char allow[96];
    ml_router_allow_header(allow_mask, allow, sizeof allow);
    lua_pushstring(co, allow);
    lua_setfield(co, -2, "_allow");
  }
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
  if (r->upload && ml_upload_failed(r->upload)) {
    respond_500(t, NULL, 1, "the upload could not be written");
  } else if (route->pooled) {
    ml_pooled_route_start(a, t, m, answered);
  } else {
    if (route->pool_hop) {   /* for req_pooled, behind the middleware */
      r->match = ml_xmalloc(sizeof *r->match);
      *r->match = *m;
    }
    run_coroutine(a, t, route, m);
  }
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
    if (a->unrouted_ref) {
      run_unrouted(a, c, r, rc, m.allow);
      return;
    }
    ml_request_release(r, &a->spare_requests);
    respond_unrouted(c, rc, m.allow);
    return;
  }
  ml_route_t *route = &a->routes[m.route];
  if (route->metric == ML_ROUTE_METRIC_UNSET)   /* once: by its template, never its path */
    __atomic_store_n(&route->metric, ml_metrics_series(route->pattern), __ATOMIC_RELAXED);
  c->metric_series = route->metric;
  if (route->serve_static) {   /* app:static: served in C, without Lua (static.h) */
    const char *path = r->path;
    size_t path_len = r->path_len;
    ml_request_release(r, &a->spare_requests);
    ml_static_serve(route->serve_static, a->loop, c, path, path_len);
    return;
  }
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
  if (route->serve_static) return 0;   /* a body for a static file is read and dropped */
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
  run_after(t->sched->owner, request_release(t, 0), "client disconnected");
}
