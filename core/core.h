/* The "moonlet.core" module: the C functions the Lua side (lua/moonlet) builds on; each
 * file installs its own (ml_<file>_open). Names follow the Lua API they serve: a bare name
 * for what a `moonlet.x` function is or builds on (sleep, gather, run_in_pool, log, now,
 * status_reason for http_error, array_mt for array), `<module>_<name>` for
 * `moonlet.<module>.<name>` (http_request, shared_dict, db_sqlite_open, json_encode) and
 * `req_<name>` for the request's fields and methods (req_url, req_headers, req_form,
 * req_route). Handlers use them through `moonlet`. */
#ifndef ML_CORE_H
#define ML_CORE_H
#include <lauxlib.h>
#include <lua.h>

/* lua_CFunction for package.preload["moonlet.core"]: returns the module table. */
int ml_core_open(lua_State *L);

/* Turns the development mode (--debug, --reload) on or off for the whole process:
 * core.dev_mode(), ml_core_dev_mode(). Response schemas are checked, and a 500 for a Lua
 * error carries the error and its traceback (lua/moonlet/error_page.lua). Call it before
 * the first Lua state is made (or the worker threads start). */
void ml_core_set_dev_mode(int on);
int ml_core_dev_mode(void);

/* Registers the metatable `name` of a userdata type moonlet.core hands out, once per
 * state: `methods` (may be NULL) become its __index table, `gc` (may be NULL) its __gc.
 * Leaves the stack as it was. */
void ml_core_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc);

/* The files moonlet.core is made of, as lualib.h lists Lua's libraries: each installs its
 * functions into the table on top of the stack. Declared here only, so that core.c needs
 * no module's header and no module includes another through it. */
void ml_json_open(lua_State *L);          /* bridge/json.c: json_encode, json_decode, array_mt */
void ml_request_open(lua_State *L);       /* bridge/request.c: req_url, req_query, req_form, ... */
void ml_pooled_route_open(lua_State *L);  /* bridge/pooled_route.c: req_pooled */
void ml_gzip_open(lua_State *L);          /* bridge/gzip.c: gzip */
void ml_static_mount_open(lua_State *L);  /* bridge/static_mount.c: static_dir */
void ml_stream_open(lua_State *L);        /* bridge/stream.c: stream_start, stream_send, ... */
void ml_websocket_open(lua_State *L);     /* bridge/websocket.c: ws_accept, ws_receive, ... */
void ml_test_client_open(lua_State *L);  /* bridge/test_client.c: test_client_new */
void ml_sched_open(lua_State *L);         /* sched/sched.c: what tasks keep in the registry */
void ml_sleep_open(lua_State *L);         /* sched/sleep.c: sleep */
void ml_spawn_open(lua_State *L);         /* sched/spawn.c: spawn */
void ml_cond_open(lua_State *L);          /* sched/cond.c: cond */
void ml_gather_open(lua_State *L);        /* sched/gather.c: gather, task_error_mt */
void ml_timeout_open(lua_State *L);       /* sched/timeout.c: timeout */
void ml_run_in_pool_open(lua_State *L);   /* sched/run_in_pool.c: run_in_pool, in_pool */
void ml_shared_open(lua_State *L);        /* sched/shared.c: shared_dict */
void ml_httpc_open(lua_State *L);         /* clients/httpc.c: http_request */
void ml_db_sqlite_open(lua_State *L);     /* clients/db_sqlite.c: db_sqlite_open */
void ml_db_pg_open(lua_State *L);         /* clients/db_pg.c: db_pg_open */
void ml_redis_open(lua_State *L);         /* clients/redis.c: redis_client, redis_subscribe */
/* --proxy-headers (on) and --forwarded-allow-ips (allow; NULL keeps the last), for every
 * Lua state of the process (req.client, req.scheme: lua/moonlet/proxy.lua). */
void ml_core_set_proxy(int on, const char *allow);
#endif
