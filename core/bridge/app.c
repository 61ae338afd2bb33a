/* App states (see app.h). */
#include "app.h"
#include "err.h"
#include "mem.h"
#include "lstate.h"
#include "static_mount.h"
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
  lua_getfield(L, rt, "dispatch_noreq");
  a->dispatch_noreq_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "req_mt");
  a->req_refs_ref = ml_request_refs(L);
  lua_getfield(L, rt, "routes");
  lua_pushvalue(L, app_idx);
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  int list = lua_gettop(L);
  a->nroutes = (int)lua_objlen(L, list);
  a->routes = ml_xcalloc((size_t)a->nroutes + 1, sizeof *a->routes);
  for (int i = 0; i < a->nroutes; i++) {
    lua_rawgeti(L, list, i + 1);
    lua_getfield(L, -1, "mask");
    unsigned mask = (unsigned)lua_tointeger(L, -1);
    lua_getfield(L, -2, "path");
    lua_getfield(L, -3, "methods");
    lua_getfield(L, -4, "pooled");
    a->routes[i].pooled = lua_toboolean(L, -1);
    lua_getfield(L, -5, "pool_hop");
    a->routes[i].pool_hop = lua_toboolean(L, -1);
    lua_getfield(L, -6, "max_body");
    a->routes[i].max_body = (size_t)lua_tonumber(L, -1);   /* checked by app.lua */
    lua_getfield(L, -7, "noreq");
    a->routes[i].noreq = lua_toboolean(L, -1);
    lua_pop(L, 4);
    ml_route_t *r = &a->routes[i];
    r->pattern = ml_xstrdup(lua_tostring(L, -2));
    r->metric = ML_ROUTE_METRIC_UNSET;
    r->methods = ml_xstrdup(lua_tostring(L, -1));
    lua_pushfstring(L, "%s %s", r->methods, r->pattern);
    r->label = ml_xstrdup(lua_tostring(L, -1));
    r->serve_static = ml_static_mount_from(L, -5);   /* app:static's routes */
    lua_getfield(L, -5, "handler");
    r->handler_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 5);
    if (ml_router_add(a->router, mask, r->pattern, i, err, errlen)) return -1;
  }
  /* after the handlers: the references each request uses come first, where the registry
   * keeps them in its array part */
  lua_getfield(L, rt, "resolve");
  a->resolve_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "after");
  a->after_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "unrouted");
  lua_pushvalue(L, app_idx);
  if (lua_pcall(L, 1, 1, 0)) goto lua_err;
  if (lua_isnil(L, -1)) lua_pop(L, 1);
  else a->unrouted_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, rt, "lifespan");
  a->lifespan_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, app_idx);
  a->app_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, app_idx - 1);
  return 0;
lua_err:
  return ml_err(err, errlen, "%s", lua_tostring(L, -1));
}

const ml_route_t *ml_app_route(const ml_app_t *a, const char *label, int hint) {
  if (hint >= 0 && hint < a->nroutes && strcmp(a->routes[hint].label, label) == 0)
    return &a->routes[hint];
  for (int i = 0; i < a->nroutes; i++)
    if (strcmp(a->routes[i].label, label) == 0) return &a->routes[i];
  return NULL;
}

static void app_closed_cb(ml_sched_t *s) {
  free(s->owner);
}

/* An app state for appdir, its scheduler ready, nothing loaded yet. */
static ml_app_t *app_state(uv_loop_t *loop, const char *appdir, int flags,
                           const ml_preload_t *preload, char *err, size_t errlen) {
  ml_app_t *a = ml_xcalloc(1, sizeof *a);
  a->loop = loop;
  a->router = ml_router_new();
  a->L = ml_lua_new(appdir, preload);
  if (!a->L) {
    snprintf(err, errlen, "cannot create a Lua state (out of memory)");
    ml_app_free(a);
    return NULL;
  }
  ml_sched_init(&a->sched, a->L, loop);
  a->sched.owner = a;
  a->sched.in_pool = (flags & ML_APP_POOL) != 0;
  a->sched.no_wait = (flags & ML_APP_NO_WAIT) != 0;
  return a;
}

ml_app_t *ml_app_new(uv_loop_t *loop, const char *appdir, int flags,
                     const ml_preload_t *preload, char *err, size_t errlen) {
  ml_app_t *a = app_state(loop, appdir, flags, preload, err, errlen);
  if (a && (ml_lua_load_app(a->L, appdir, err, errlen) || load_routes(a, err, errlen))) {
    ml_app_free(a);
    return NULL;
  }
  return a;
}

ml_app_t *ml_app_failed(uv_loop_t *loop, const char *appdir, const char *error) {
  char err[1024];
  ml_app_t *a = app_state(loop, appdir, 0, NULL, err, sizeof err);
  if (!a) return NULL;
  lua_State *L = a->L;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonlet.load_error");
  if (lua_pcall(L, 1, 1, 0) == 0) {
    lua_pushstring(L, error);
    if (lua_pcall(L, 1, 1, 0) == 0 && load_routes(a, err, sizeof err) == 0) return a;
  }
  ml_app_free(a);   /* moonlet's own module failed: nothing better to serve */
  return NULL;
}

ml_app_t *ml_app_in(lua_State *L, int idx, uv_loop_t *loop, char *err, size_t errlen) {
  ml_app_t *a = ml_xcalloc(1, sizeof *a);
  a->loop = loop;
  a->router = ml_router_new();
  a->L = L;
  a->borrowed = 1;
  ml_sched_init(&a->sched, L, loop);
  a->sched.owner = a;
  int top = lua_gettop(L);
  lua_pushvalue(L, idx);
  if (load_routes(a, err, errlen)) {
    lua_settop(L, top);
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
    if (!a->borrowed) lua_close(a->L);
  }
  for (int i = 0; i < a->nroutes; i++) {
    free(a->routes[i].pattern);
    free(a->routes[i].methods);
    free(a->routes[i].label);
    ml_static_free(a->routes[i].serve_static);
  }
  free(a->routes);
  ml_router_free(a->router);
  ml_buf_free(&a->scratch);
  ml_request_free_spares(&a->spare_requests);
  /* the scheduler's handles may still be closing: then its close callback frees a */
  if (!on_loop || a->sched.handles_closed) free(a);
  else a->sched.closed_cb = app_closed_cb;
}
