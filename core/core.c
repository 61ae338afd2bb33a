/* The "moonlet.core" module (see core.h). */
#include "core.h"
#include "metrics.h"
#include "log.h"
#include "mem.h"
#include "response.h"
#include <lauxlib.h>
#include <string.h>
#include <uv.h>

/* --- misc ---------------------------------------------------------------------------- */

/* log(level, message) with level "debug" | "info" | "warn" | "error" */
void ml_core_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc) {
  if (luaL_newmetatable(L, name)) {
    if (methods) {
      lua_newtable(L);
      luaL_register(L, NULL, methods);
      lua_setfield(L, -2, "__index");
    }
    if (gc) {
      lua_pushcfunction(L, gc);
      lua_setfield(L, -2, "__gc");
    }
  }
  lua_pop(L, 1);
}

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

/* status_reason(status) -> the reason phrase of the status line ("Not Found") */
static int l_status_reason(lua_State *L) {
  lua_pushstring(L, ml_status_reason((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* Set by the host before it loads an app (--debug, --reload), or by the test client for
 * its lifetime ({ debug = true }); read by every Lua state of the process, the pool
 * threads' too. One per process (moonlet.h: the host created last sets it), atomic: a
 * second host may be created while the first one's threads read it. */
static int dev_mode;

void ml_core_set_dev_mode(int on) {
  __atomic_store_n(&dev_mode, on != 0, __ATOMIC_RELAXED);
}

int ml_core_dev_mode(void) {
  return __atomic_load_n(&dev_mode, __ATOMIC_RELAXED);
}

/* --proxy-headers and --forwarded-allow-ips, the process's as the development mode is;
 * the allow list's string is never freed (a host created later may replace it while a
 * thread reads the old one). */
static int proxy_on;
static const char *proxy_allow = "127.0.0.1";

void ml_core_set_proxy(int on, const char *allow) {
  const char *old = __atomic_load_n(&proxy_allow, __ATOMIC_ACQUIRE);
  if (allow && strcmp(allow, old) != 0)
    __atomic_store_n(&proxy_allow, ml_xstrdup(allow), __ATOMIC_RELEASE);
  __atomic_store_n(&proxy_on, on != 0, __ATOMIC_RELAXED);
}

/* proxy() -> false, or true and the trusted addresses ("127.0.0.1,10.0.0.2", "*") */
static int l_proxy(lua_State *L) {
  int on = __atomic_load_n(&proxy_on, __ATOMIC_RELAXED);
  lua_pushboolean(L, on);
  if (!on) return 1;
  lua_pushstring(L, __atomic_load_n(&proxy_allow, __ATOMIC_ACQUIRE));
  return 2;
}

/* dev_mode() -> true under --debug or --reload (the development mode: route responses are
 * checked against their `response` schema, a 500 carries its error: error_page.lua) */
static int l_dev_mode(lua_State *L) {
  lua_pushboolean(L, ml_core_dev_mode());
  return 1;
}

int ml_core_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"log", l_log}, {"now", l_now},
                                 {"status_reason", l_status_reason},
                                 {"dev_mode", l_dev_mode}, {"proxy", l_proxy},
                                 {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  ml_json_open(L);
  ml_sched_open(L);
  ml_sleep_open(L);
  ml_spawn_open(L);
  ml_cond_open(L);
  ml_gather_open(L);
  ml_timeout_open(L);
  ml_run_in_pool_open(L);
  ml_shared_open(L);
  ml_request_open(L);
  ml_pooled_route_open(L);
  ml_gzip_open(L);
  ml_static_mount_open(L);
  ml_stream_open(L);
  ml_websocket_open(L);
  ml_test_client_open(L);
  ml_httpc_open(L);
  ml_db_sqlite_open(L);
  ml_db_pg_open(L);
  ml_redis_open(L);
  ml_jobs_metrics_open(L);
  return 1;
}
