/* moonlet.redis's Lua API in C (lua/moonlet/redis.lua builds the documented API on it):
 *   redis_client(key, host, port, user|nil, password|nil, db, connect_s|nil, timeout_s|nil)
 *       -> client (no I/O: the pool of this state for key, made on first use; it lives as
 *          long as the state)
 *   client:ready() -> whether its shared connection is up
 *   client:call(own, cmd, ...) -> reply | nil, err    (own: on a connection of its own)
 *   client:pipeline({ {cmd, ...}, ... }) -> { reply, ... } | nil, err
 * Waiting goes through the task API: a coroutine yields, a pool thread blocks.
 *
 * A request (req_t) is what one task waits for: one command, or a pipeline's commands,
 * each given to hiredis with the request as privdata. The callback of the last one pushes
 * the outcome, frees the request and wakes the task (last: the task may send the next
 * command at once). The timeout (client timeout_s, shared connection only) kills the
 * connection, as a lost connection would: its commands fail with "redis: timeout". */
#include "redis.h"
#include "core.h"
#include "mem.h"
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARGS_ON_STACK 16

typedef struct {
  ml_task_t *task;           /* NULL when nobody waits (cancelled, timed out) */
  ml_redis_conn_t *c;
  lua_State *L;              /* the state's main thread: results_ref's registry */
  int n, got;                /* commands sent, replies received */
  int results_ref;           /* a pipeline's replies so far; LUA_NOREF for a call */
  int failed;                /* a pipeline lost its connection: err says why */
  char err[ML_REDIS_ERRLEN];
} req_t;

void ml_redis_push_reply(lua_State *L, const redisReply *r) {
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS:
    lua_pushlstring(L, r->str, r->len);
    break;
  case REDIS_REPLY_INTEGER:
    lua_pushnumber(L, (lua_Number)r->integer);
    break;
  case REDIS_REPLY_NIL:
    lua_pushlightuserdata(L, NULL);   /* cjson.null, moonlet.null */
    break;
  case REDIS_REPLY_ARRAY:
    lua_createtable(L, (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      ml_redis_push_reply(L, r->element[i]);
      lua_rawseti(L, -2, (int)i + 1);
    }
    break;
  default:   /* REDIS_REPLY_ERROR */
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, r->str, r->len);
    lua_setfield(L, -2, "err");
  }
}

static int push_error(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* Nobody waits for q any more: its table of replies goes now, while the state lives. */
static void req_detach(req_t *q) {
  q->task = NULL;
  if (q->results_ref != LUA_NOREF) {
    luaL_unref(q->L, LUA_REGISTRYINDEX, q->results_ref);
    q->results_ref = LUA_NOREF;
  }
}

/* A reply (NULL: the connection went) to one of q's commands. */
static void reply_cb(redisAsyncContext *ac, void *r, void *privdata) {
  const redisReply *reply = r;
  req_t *q = privdata;
  ml_redis_conn_t *c = ac->data;
  ml_task_t *t = q->task;
  int nres = 0;
  if (c) ml_redis_conn_pending(c, -1);
  q->got++;
  if (t && q->results_ref == LUA_NOREF) {   /* a call */
    if (!reply) {
      ml_redis_conn_error(ac, q->err);
      nres = push_error(t->co, q->err);
    } else if (reply->type == REDIS_REPLY_ERROR) {
      lua_pushnil(t->co);
      lua_pushlstring(t->co, reply->str, reply->len);
      nres = 2;
    } else {
      ml_redis_push_reply(t->co, reply);
      nres = 1;
    }
  } else if (t) {   /* a pipeline: the reply goes to its place */
    if (!reply) {
      if (!q->failed) ml_redis_conn_error(ac, q->err);
      q->failed = 1;
    } else if (!q->failed) {
      lua_rawgeti(t->co, LUA_REGISTRYINDEX, q->results_ref);
      ml_redis_push_reply(t->co, reply);
      lua_rawseti(t->co, -2, q->got);
      lua_pop(t->co, 1);
    }
    if (q->got == q->n) {
      if (q->failed) {
        nres = push_error(t->co, q->err);
      } else {
        lua_rawgeti(t->co, LUA_REGISTRYINDEX, q->results_ref);
        nres = 1;
      }
    }
  }
  if (q->got < q->n) return;
  if (c && c->kind == ML_REDIS_OWN) ml_redis_conn_checkin(c);
  if (t) ml_task_timer_stop(t);
  req_detach(q);
  free(q);
  if (t) ml_task_wake(t, nres);
}

/* The task stopped waiting: a call on a connection of its own (a BLPOP, say) ends its
 * connection, which Redis would otherwise keep blocked; on the shared one the replies are
 * thrown away when they come. */
static void req_cancel(ml_task_t *t) {
  req_t *q = t->wait;
  ml_redis_conn_t *c = q->c;
  ml_task_timer_stop(t);
  req_detach(q);
  if (c->kind == ML_REDIS_OWN) ml_redis_conn_kill(c, NULL);   /* may free q */
}

static void req_timeout_cb(uv_timer_t *h) {
  ml_task_t *t = h->data;
  req_t *q = t->wait;
  ml_redis_conn_t *c = q->c;
  t->cancel = NULL;
  req_detach(q);
  ml_redis_conn_kill(c, "redis: timeout");   /* may free q */
  push_error(t->co, "redis: timeout");
  ml_task_wake(t, 2);
}

static ml_redis_client_t *check_client(lua_State *L) {
  return luaL_checkudata(L, 1, ML_REDIS_CLIENT_MT);
}

/* The arguments of a command, as hiredis takes them. Numbers are written out whole when
 * they are integers (Lua's tostring would give 1e+15). */
typedef struct {
  int argc;
  const char **argv;
  size_t *lens;
  char (*nums)[32];
  const char *argv_s[ARGS_ON_STACK];
  size_t lens_s[ARGS_ON_STACK];
  char nums_s[ARGS_ON_STACK][32];
} args_t;

static void args_init(args_t *a, int argc) {
  a->argc = argc;
  if (argc <= ARGS_ON_STACK) {
    a->argv = a->argv_s;
    a->lens = a->lens_s;
    a->nums = a->nums_s;
  } else {
    a->argv = ml_xmalloc(sizeof *a->argv * (size_t)argc);
    a->lens = ml_xmalloc(sizeof *a->lens * (size_t)argc);
    a->nums = ml_xmalloc(sizeof *a->nums * (size_t)argc);
  }
}

static void args_free(args_t *a) {
  if (a->argv == a->argv_s) return;
  free(a->argv);
  free(a->lens);
  free(a->nums);
}

/* Argument i of the command from the Lua value at idx (a string or a number); raises
 * (before anything was sent) for other types: a.argv[i] then points into the Lua string,
 * which the caller keeps on its stack or in its table until the command is sent. */
static void args_set(lua_State *L, args_t *a, int i, int idx, int argn) {
  int type = lua_type(L, idx);
  if (type == LUA_TNUMBER) {
    double d = lua_tonumber(L, idx);
    int n;
    if (d == floor(d) && fabs(d) < 9.2e18) n = snprintf(a->nums[i], 32, "%lld", (long long)d);
    else n = snprintf(a->nums[i], 32, "%.17g", d);
    a->argv[i] = a->nums[i];
    a->lens[i] = (size_t)n;
  } else if (type == LUA_TSTRING) {
    a->argv[i] = lua_tolstring(L, idx, &a->lens[i]);
  } else {
    args_free(a);
    luaL_error(L, "bad argument #%d to redis command (expected a string or a number, got %s)",
               argn, lua_typename(L, type));
  }
}

/* client:call(own, cmd, ...) */
static int l_call(lua_State *L) {
  ml_redis_client_t *cl = check_client(L);
  int own = lua_toboolean(L, 2);
  int argc = lua_gettop(L) - 2;
  luaL_argcheck(L, argc >= 1, 3, "expected a command name");
  ml_task_t *t = ml_task_current(L);
  args_t a;
  args_init(&a, argc);
  for (int i = 0; i < argc; i++) args_set(L, &a, i, i + 3, i + 1);
  char err[ML_REDIS_ERRLEN];
  ml_redis_conn_t *c = own ? ml_redis_conn_own(cl->pool, cl->connect_ms, err)
                           : ml_redis_conn_shared(cl->pool, cl->connect_ms, err);
  if (!c) {
    args_free(&a);
    return push_error(L, err);
  }
  req_t *q = ml_xcalloc(1, sizeof *q);
  q->c = c;
  q->L = t->sched->L;
  q->n = 1;
  q->results_ref = LUA_NOREF;
  int r = redisAsyncCommandArgv(c->ac, reply_cb, q, argc, a.argv, a.lens);
  args_free(&a);
  if (r != REDIS_OK) {
    free(q);
    if (own) ml_redis_conn_kill(c, NULL);
    return push_error(L, "redis: closed");
  }
  ml_redis_conn_pending(c, 1);
  q->task = t;
  if (cl->timeout_ms && !own) uv_timer_start(ml_task_timer(t), req_timeout_cb, cl->timeout_ms, 0);
  return ml_task_wait(L, t, req_cancel, q);
}

/* client:pipeline(cmds): every command in one write on the shared connection. */
static int l_pipeline(lua_State *L) {
  ml_redis_client_t *cl = check_client(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_objlen(L, 2);
  ml_task_t *t = ml_task_current(L);
  for (int i = 1; i <= n; i++) {   /* check everything before anything is sent */
    lua_rawgeti(L, 2, i);
    if (!lua_istable(L, -1) || lua_objlen(L, -1) < 1)
      luaL_error(L, "bad pipeline command #%d (expected { name, args... })", i);
    for (int k = 1; k <= (int)lua_objlen(L, -1); k++) {
      lua_rawgeti(L, -1, k);
      int type = lua_type(L, -1);
      if (type != LUA_TSTRING && type != LUA_TNUMBER)
        luaL_error(L, "bad argument #%d to pipeline command #%d (expected a string or a "
                   "number, got %s)", k, i, lua_typename(L, type));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (n == 0) {
    lua_newtable(L);
    return 1;
  }
  char err[ML_REDIS_ERRLEN];
  ml_redis_conn_t *c = ml_redis_conn_shared(cl->pool, cl->connect_ms, err);
  if (!c) return push_error(L, err);
  req_t *q = ml_xcalloc(1, sizeof *q);
  q->c = c;
  q->L = t->sched->L;
  q->n = n;
  lua_createtable(L, n, 0);
  q->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    int cmd = lua_gettop(L);
    int argc = (int)lua_objlen(L, cmd);
    args_t a;
    args_init(&a, argc);
    for (int k = 0; k < argc; k++) {
      lua_rawgeti(L, cmd, k + 1);   /* the table keeps the strings while they are sent */
      args_set(L, &a, k, -1, k + 1);   /* cannot raise: the types were checked */
      lua_pop(L, 1);
    }
    int r = redisAsyncCommandArgv(c->ac, reply_cb, q, argc, a.argv, a.lens);
    args_free(&a);
    lua_pop(L, 1);
    if (r != REDIS_OK) {   /* the context is going: what was sent fails by itself */
      q->n = i - 1;
      req_detach(q);
      if (q->n == 0) free(q);
      return push_error(L, "redis: closed");
    }
    ml_redis_conn_pending(c, 1);
  }
  q->task = t;
  if (cl->timeout_ms) uv_timer_start(ml_task_timer(t), req_timeout_cb, cl->timeout_ms, 0);
  return ml_task_wait(L, t, req_cancel, q);
}

static int l_ready(lua_State *L) {
  ml_redis_client_t *cl = check_client(L);
  lua_pushboolean(L, cl->pool->shared && ml_redis_conn_ready(cl->pool->shared));
  return 1;
}

static uint64_t opt_ms(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  return ml_sched_check_ms(L, idx);
}

static int l_client(lua_State *L) {
  const char *key = luaL_checkstring(L, 1);
  const char *host = luaL_checkstring(L, 2);
  int port = (int)luaL_checkinteger(L, 3);
  const char *user = luaL_optstring(L, 4, NULL);
  const char *password = luaL_optstring(L, 5, NULL);
  int db = (int)luaL_optinteger(L, 6, 0);
  uint64_t connect_ms = opt_ms(L, 7), timeout_ms = opt_ms(L, 8);
  ml_task_t *t = ml_task_current(L);
  ml_redis_pools_t *ps = ml_redis_pools_of(L, t->sched);
  ml_redis_client_t *cl = lua_newuserdata(L, sizeof *cl);
  cl->pool = ml_redis_pool_get(ps, key, host, port, user, password, db);
  cl->connect_ms = connect_ms;
  cl->timeout_ms = timeout_ms;
  luaL_getmetatable(L, ML_REDIS_CLIENT_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void ml_redis_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"call", l_call},
                                     {"pipeline", l_pipeline},
                                     {"ready", l_ready},
                                     {NULL, NULL}};
  ml_core_class(L, ML_REDIS_CLIENT_MT, methods, NULL);
  lua_pushcfunction(L, l_client);
  lua_setfield(L, -2, "redis_client");
  ml_redis_sub_open(L);
}
