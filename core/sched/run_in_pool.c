/* moonlet.run_in_pool (see run_in_pool.h). */
#include "run_in_pool.h"
#include "core.h"
#include "mem.h"
#include "app.h"
#include "copy.h"
#include "lstate.h"
#include "workers.h"
#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>

typedef struct {
  ml_work_t work;
  ml_buf_t in;               /* packed (kind, spec, args...): kind "b" bytecode, "m" a name */
  ml_buf_t out;              /* packed (true, results...) or (false, message) */
  ml_task_t *task;           /* the caller's, waiting */
} call_t;

#define CALL_OF(w) ((call_t *)((char *)(w) - offsetof(call_t, work)))

static const char cache_key = 'c';   /* registry[&cache_key] = { bytecode = function } */

static void call_free(call_t *j) {
  ml_buf_free(&j->in);
  ml_buf_free(&j->out);
  free(j);
}

/* --- on a worker thread -------------------------------------------------------------- */

/* Leaves exactly (false, message) on the stack, the message being the value on top. */
static void call_failed(lua_State *L) {
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  while (lua_gettop(L) > 2) lua_remove(L, 1);
}

/* Replaces the function spec at index 3 with the function: bytecode is compiled once per
 * thread (cached), a "module.function" name is resolved by runtime.resolve. Returns 0, or
 * -1 with the error on top. */
static int resolve_fn(ml_app_t *a, lua_State *L, const char *kind) {
  if (kind[0] == 'b') {
    size_t slen;
    const char *code = lua_tolstring(L, 3, &slen);
    lua_pushlightuserdata(L, (void *)&cache_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {   /* the state's first call */
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushlightuserdata(L, (void *)&cache_key);
      lua_pushvalue(L, -2);
      lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pushvalue(L, 3);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      if (luaL_loadbuffer(L, code, slen, "=run_in_pool")) return -1;
      lua_pushvalue(L, 3);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
    lua_replace(L, 3);
    lua_pop(L, 1);   /* the cache */
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->resolve_ref);
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 1, 1, 1)) return -1;
  lua_replace(L, 3);
  return 0;
}

/* Runs run_in_pool's function: in = (kind, spec, args...), out = (true, results...) or
 * (false, "message + traceback"). */
static void run(ml_worker_t *w, ml_work_t *work) {
  call_t *j = CALL_OF(work);
  char err[256];
  const char *load_error;
  ml_app_t *a = ml_worker_app(w, &load_error);
  j->out.len = 0;
  if (!a) {   /* (false, message), packed without a state */
    char msg[1200];
    int len = snprintf(msg, sizeof msg, "run_in_pool: the executor's Lua state failed to "
                       "load the app: %s", load_error ? load_error : "?");
    ml_copy_put_bool(&j->out, 0);
    ml_copy_put_str(&j->out, msg, len < (int)sizeof msg ? (size_t)len : sizeof msg - 1);
    return;
  }
  lua_State *L = a->L;
  lua_settop(L, 0);
  lua_pushcfunction(L, ml_lua_traceback);   /* 1 */
  int n = ml_copy_unpack(L, j->in.data, j->in.len);
  if (n < 2) {
    lua_pushstring(L, "run_in_pool: corrupt job");
    call_failed(L);
  } else if (resolve_fn(a, L, lua_tostring(L, 2))) {
    call_failed(L);
  } else {
    lua_remove(L, 2);   /* kind: the stack is now traceback, fn, args... */
    if (lua_pcall(L, n - 2, LUA_MULTRET, 1)) {
      call_failed(L);
    } else {
      lua_pushboolean(L, 1);
      lua_replace(L, 1);   /* true, results... */
    }
  }
  if (ml_copy_pack(L, 1, lua_gettop(L), &j->out, err, sizeof err)) {
    lua_settop(L, 0);
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "run_in_pool: a result %s", err);
    ml_copy_pack(L, 1, 2, &j->out, err, sizeof err);
  }
  lua_settop(L, 0);
}

/* --- on the loop ----------------------------------------------------------------------- */

static void done(ml_work_t *work, int status) {
  call_t *j = CALL_OF(work);
  if (status == UV_ECANCELED) {   /* the caller is gone */
    call_free(j);
    return;
  }
  ml_task_t *t = j->task;
  int n = ml_copy_unpack(t->co, j->out.data, j->out.len);
  call_free(j);
  if (n < 1) {
    lua_pushboolean(t->co, 0);
    lua_pushstring(t->co, "run_in_pool: corrupt result");
    n = 2;
  }
  ml_task_wake(t, n);
}

static void cancel(ml_task_t *t) {
  ml_workers_cancel(t->sched->executor, t->wait);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  ml_buf_add(ud, p, sz);
  return 0;
}

/* On a worker thread already: calls fn (or the function named) here, with the same
 * results as a job would bring back. */
static int call_here(lua_State *L, ml_sched_t *s, int nargs) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ((ml_app_t *)s->owner)->resolve_ref);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    lua_replace(L, 1);
  }
  lua_pushboolean(L, 1);
  lua_insert(L, 1);
  lua_call(L, nargs, LUA_MULTRET);
  return lua_gettop(L);
}

/* Packs fn (as bytecode) or its name, then the nargs arguments after it, into j->in.
 * Returns 0, or -1 with a message in err. */
static int pack_call(lua_State *L, int nargs, call_t *j, char *err, size_t errlen) {
  if (lua_type(L, 1) == LUA_TFUNCTION) {
    ml_buf_t code = {0};
    lua_pushvalue(L, 1);
    lua_dump(L, dump_writer, &code);
    lua_pop(L, 1);
    ml_copy_put_str(&j->in, "b", 1);
    ml_copy_put_str(&j->in, code.data, code.len);
    ml_buf_free(&code);
  } else {
    size_t len;
    const char *name = lua_tolstring(L, 1, &len);
    ml_copy_put_str(&j->in, "m", 1);
    ml_copy_put_str(&j->in, name, len);
  }
  return ml_copy_pack(L, 2, nargs, &j->in, err, errlen);
}

/* run_in_pool(fn | "module.function", ...) -> true, results... | false, message
 * (moonlet.run_in_pool raises on false). On a worker thread fn simply runs there. */
static int l_run_in_pool(lua_State *L) {
  int ft = lua_type(L, 1);
  luaL_argcheck(L, ft == LUA_TFUNCTION || ft == LUA_TSTRING, 1,
                "expected a function or a \"module.function\" name");
  ml_sched_t *s = ml_sched_of(L);
  int nargs = lua_gettop(L) - 1;
  if (s && s->in_pool) return call_here(L, s, nargs);
  if (!s || !s->executor) return luaL_error(L, "run_in_pool: no executor in this state");
  if (ft == LUA_TFUNCTION) {
    if (lua_iscfunction(L, 1))
      return luaL_argerror(L, 1, "a C function cannot be sent to the pool");
    const char *up = lua_getupvalue(L, 1, 1);
    if (up)
      return luaL_error(L, "run_in_pool: the function uses upvalue '%s' (a local of an outer "
                           "scope); pass it as an argument or use a \"module.function\" name", up);
  }
  ml_task_t *t = ml_task_current(L);   /* before the job: it may raise */
  call_t *j = ml_xcalloc(1, sizeof *j);
  char err[256];
  if (pack_call(L, nargs, j, err, sizeof err)) {
    call_free(j);
    return luaL_error(L, "run_in_pool: an argument %s", err);
  }
  j->task = t;
  if (ml_workers_submit(s->executor, &j->work, run, done)) {
    call_free(j);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "executor queue is full");
    lua_pushliteral(L, "queue_full");   /* the code moonlet.run_in_pool checks (err.h) */
    return 3;
  }
  return ml_task_wait(L, t, cancel, &j->work);
}

/* in_pool() -> true on a worker thread */
static int l_in_pool(lua_State *L) {
  ml_sched_t *s = ml_sched_of(L);
  lua_pushboolean(L, s && s->in_pool);
  return 1;
}

void ml_run_in_pool_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"run_in_pool", l_run_in_pool}, {"in_pool", l_in_pool},
                                 {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
