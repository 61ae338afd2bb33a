/* The "moonlet.core" module: C primitives the Lua side (lua/moonlet) builds on.
 * Handlers use them through `moonlet`, not directly. */
#include "app.h"
#include "json.h"
#include "log.h"
#include <lauxlib.h>
#include <math.h>
#include <time.h>

/* --- moonlet.sleep --------------------------------------------------------------- */

static void sleep_cb(uv_timer_t *h) {
  ml_task_resume(h->data, 0);
}

static void sleep_cancel(ml_task_t *t) {
  uv_timer_stop(&t->timer);
}

/* sleep(seconds): in a request's coroutine it yields on a libuv timer; elsewhere (app
 * loading, `moonlet test`, pool threads) it blocks the calling thread. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s < 1e9, 1, "expected a non-negative number of seconds");
  ml_app_t *a = ml_app_of(L);
  if (!a || !a->current) {
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {}
    return 0;
  }
  ml_task_t *t = a->current;
  if (t->co != L)
    return luaL_error(L, "moonlet.sleep: called from a coroutine of its own; only the "
                         "request's coroutine can wait");
  uv_timer_start(&t->timer, sleep_cb, (uint64_t)ceil(s * 1000), 0);
  t->cancel = sleep_cancel;
  return lua_yield(L, 0);
}

/* --- lazy request fields ------------------------------------------------------------ */

/* The connection behind req._t/req._g, or raises if that request is over. */
static ml_conn_t *req_conn(lua_State *L) {
  ml_task_t *t = lua_touserdata(L, 1);
  unsigned gen = (unsigned)luaL_checknumber(L, 2);
  if (!t || t->gen != gen || !t->conn)
    luaL_error(L, "this request is finished: read req.headers/req.query while handling it");
  return t->conn;
}

/* req_url(t, g) -> the request target as received ("/path?query") */
static int l_req_url(lua_State *L) {
  ml_conn_t *c = req_conn(L);
  lua_pushlstring(L, ml_http_url(&c->http), c->http.url_len);
  return 1;
}

/* req_headers(t, g) -> { name = value } with lower-case names; repeated headers are
 * joined with ", " (cookies with "; "). */
static int l_req_headers(lua_State *L) {
  ml_conn_t *c = req_conn(L);
  ml_http_t *h = &c->http;
  lua_createtable(L, 0, h->nhdrs);
  for (int i = 0; i < h->nhdrs; i++) {
    ml_header_t *hd = &h->hdrs[i];
    const char *name = h->store.data + hd->name_off;
    lua_pushlstring(L, name, hd->name_len);
    lua_pushvalue(L, -1);
    lua_rawget(L, -3);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushlstring(L, h->store.data + hd->val_off, hd->val_len);
    } else {
      int cookie = hd->name_len == 6 && memcmp(name, "cookie", 6) == 0;
      lua_pushstring(L, cookie ? "; " : ", ");
      lua_pushlstring(L, h->store.data + hd->val_off, hd->val_len);
      lua_concat(L, 3);
    }
    lua_rawset(L, -3);
  }
  return 1;
}

/* --- misc ---------------------------------------------------------------------------- */

/* log(level, message) with level "debug" | "info" | "warn" | "error" */
static int l_log(lua_State *L) {
  int level = ml_log_parse_level(luaL_checkstring(L, 1));
  luaL_argcheck(L, level >= 0, 1, "expected debug, info, warn or error");
  ml_log(level, "%s", luaL_checkstring(L, 2));
  return 0;
}

/* now() -> seconds, monotonic, with sub-millisecond precision */
static int l_now(lua_State *L) {
  lua_pushnumber(L, (double)uv_hrtime() / 1e9);
  return 1;
}

/* route_of(t) -> "GET /items/{id}" of the task's route, for error messages */
static int l_route_of(lua_State *L) {
  ml_task_t *t = lua_touserdata(L, 1);
  if (!t || t->route < 0) return 0;
  lua_pushfstring(L, "%s %s", t->app->routes[t->route].methods, t->app->routes[t->route].pattern);
  return 1;
}

int ml_core_open(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"sleep", l_sleep},       {"req_url", l_req_url}, {"req_headers", l_req_headers},
      {"log", l_log},           {"now", l_now},         {"route_of", l_route_of},
      {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  ml_json_open(L);
  lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
  lua_setfield(L, -2, "array_mt");
  return 1;
}
