/* The app state (see app.h), and the Lua bridge on the loop: C matches the route, makes
 * the request's record (request.h) and runs the route: a coroutine route calls
 * moonlet.runtime.dispatch(handler, req) in a task and turns what it returns (status, body,
 * headers) into bytes in the connection's output buffer; a pooled route goes to the
 * worker threads (pooled_route.c). */
#include "app.h"
#include "log.h"
#include "lresponse.h"
#include "lstate.h"
#include "pooled_route.h"
#include "response.h"
#include <lauxlib.h>
#include <stdio.h>

/* Takes the runtime's functions (moonlet.runtime) and collects the routes the app on top
 * of the stack declared into the router; pops the app. */
static int load_routes(ml_app_t *a, char *err, size_t errlen) {
  lua_State *L = a->L;
  int app_idx = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, "moonlet.runtime");
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  int rt = lua_gettop(L);
  lua_getfield(L, rt, "dispatch");
  a->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "req_mt");
  a->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "routes");
  lua_pushvalue(L, app_idx);
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  int list = lua_gettop(L);
  a->nroutes = (int)lua_objlen(L, list);
  a->routes = calloc((size_t)a->nroutes + 1, sizeof *a->routes);
  if (!a->routes) abort();
  for (int i = 0; i < a->nroutes; i++) {
    lua_rawgeti(L, list, i + 1);
    lua_getfield(L, -1, "mask");
    unsigned mask = (unsigned)lua_tointeger(L, -1);
    lua_getfield(L, -2, "path");
    lua_getfield(L, -3, "methods");
    lua_getfield(L, -4, "pooled");
    a->routes[i].pooled = lua_toboolean(L, -1);
    lua_pop(L, 1);
    ml_route_t *r = &a->routes[i];
    r->pattern = strdup(lua_tostring(L, -2));
    r->methods = strdup(lua_tostring(L, -1));
    lua_pushfstring(L, "%s %s", r->methods, r->pattern);
    r->label = strdup(lua_tostring(L, -1));
    lua_getfield(L, -5, "handler");
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 5);
    if (ml_router_add(a->router, mask, r->pattern, i, err, errlen)) return -1;
  }
  /* after the handlers: the references each request uses come first, where the registry
   * keeps them in its array part */
  lua_getfield(L, rt, "resolve");
  a->resolve_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, app_idx - 1);
  return 0;
lua_err:
  snprintf(err, errlen, "%s", lua_tostring(L, -1));
  return -1;
}

const ml_route_t *ml_app_route(const ml_app_t *a, const char *label, int hint) {
  if (hint >= 0 && hint < a->nroutes && strcmp(a->routes[hint].label, label) == 0)
    return &a->routes[hint];
  for (int i = 0; i < a->nroutes; i++)
    if (strcmp(a->routes[i].label, label) == 0) return &a->routes[i];
  return NULL;
}

static void app_closed_cb(ml_sched_t *s) {
  free(s->app);
}

ml_app_t *ml_app_new(uv_loop_t *loop, const char *appdir, int in_pool, char *err,
                     size_t errlen) {
  ml_app_t *a = calloc(1, sizeof *a);
  if (!a) abort();
  a->loop = loop;
  a->router = ml_router_new();
  a->L = ml_lua_new(appdir);
  if (!a->L) {
    snprintf(err, errlen, "cannot create a Lua state (out of memory)");
    ml_app_free(a);
    return NULL;
  }
  ml_sched_init(&a->sched, a->L, loop);
  a->sched.app = a;
  a->sched.in_pool = in_pool;
  if (ml_lua_load_app(a->L, appdir, err, errlen) || load_routes(a, err, errlen)) {
    ml_app_free(a);
    return NULL;
  }
  return a;
}

void ml_app_stop(ml_app_t *a) {
  if (a && a->L) ml_sched_close(&a->sched);
}

void ml_app_free(ml_app_t *a) {
  if (!a) return;
  int on_loop = a->L != NULL;
  if (on_loop) {
    ml_sched_close(&a->sched);
    lua_close(a->L);
  }
  for (int i = 0; i < a->nroutes; i++) {
    free(a->routes[i].pattern);
    free(a->routes[i].methods);
    free(a->routes[i].label);
  }
  free(a->routes);
  ml_router_free(a->router);
  ml_buf_free(&a->scratch);
  ml_request_free_spares(&a->spare_requests);
  ml_pooled_route_free_spares(a);
  /* the scheduler's handles may still be closing: then its close callback frees a */
  if (!on_loop || a->sched.handles_closed) free(a);
  else a->sched.closed_cb = app_closed_cb;
}

/* --- requests on the loop ---------------------------------------------------------------
 * A request runs in a task whose owner is its record (request.h); the record knows the
 * connection until the client leaves (ml_app_abort). */

/* Hands back a request's record and task (see ml_app_t.requests). */
static void request_release(ml_task_t *t, int reusable) {
  ml_app_t *a = t->sched->app;
  ml_request_release(t->owner, &a->spare_requests);
  a->requests--;
  ml_task_release(t, reusable);
}

void ml_app_answered(ml_task_t *t, int status) {
  ml_conn_t *c = ((ml_request_t *)t->owner)->conn;
  request_release(t, 1);
  ml_conn_done(c, status);
}

static void respond_500(ml_task_t *t, int reusable) {
  ml_conn_t *c = ((ml_request_t *)t->owner)->conn;
  request_release(t, reusable);
  ml_resp_error(&c->out, 500, "Internal Server Error", NULL, ml_conn_keepalive(c), c->head);
  ml_conn_done(c, 500);
}

/* The coroutine returned (status, body, headers): serialize them into the connection. */
static void finish(ml_task_t *t) {
  ml_app_t *a = t->sched->app;
  ml_request_t *r = t->owner;
  ml_conn_t *c = r->conn;
  char err[200];
  int keepalive = ml_conn_keepalive(c);
  int status = ml_lresp_build(t->co, 1, &c->out, &a->scratch, &keepalive, c->head, err,
                              sizeof err);
  if (status < 0) {
    ml_log(ML_LOG_ERROR, "%s: %s", r->route, err);
    respond_500(t, 1);
    return;
  }
  if (!keepalive) ml_conn_close_after(c);
  ml_app_answered(t, status);
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
static void respond_unrouted(ml_conn_t *c, int rc, unsigned allow_mask) {
  char allow[96];
  int status = rc == ML_ROUTE_BAD_METHOD ? 405 : 404;
  if (status == 405) ml_router_allow_header(allow_mask, allow, sizeof allow);
  ml_resp_error(&c->out, status, status == 405 ? "Method Not Allowed" : "Not Found",
                status == 405 ? allow : NULL, ml_conn_keepalive(c), c->head);
  ml_conn_done(c, status);
}

void ml_app_dispatch(void *ctx, ml_conn_t *c) {
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
  if (route->pooled) ml_pooled_route_start(a, t, &m);
  else run_coroutine(a, t, route, &m);
}

void ml_app_abort(void *ctx, void *task) {
  (void)ctx;
  ml_task_t *t = task;
  ml_request_end(t->owner);   /* its req may read no more; request_done sees no conn */
  if (t->sched->current == t) return;   /* running now: request_done drops it */
  ml_task_cancel(t);
  request_release(t, 0);
}
