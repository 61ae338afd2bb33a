/* moonlet.gather: child tasks run concurrently; the parent waits for all (see sched.h). */
#include "sched.h"
#include "core.h"
#include "mem.h"
#include <lauxlib.h>
#include <stdlib.h>

static const char task_err_key = 'e';  /* registry[&task_err_key] = metatable of errors */

/* gather state: lives from the call until the parent is woken or cancelled */
typedef struct {
  ml_task_t *parent;
  int n, remaining, failed, return_errors, results_ref;
  ml_task_t **kids;          /* NULL once a child has ended */
} gather_t;

static void gather_free(lua_State *L, gather_t *g) {
  luaL_unref(L, LUA_REGISTRYINDEX, g->results_ref);
  free(g->kids);
  free(g);
}

static void gather_cancel_kids(gather_t *g) {
  for (int i = 0; i < g->n; i++) {
    ml_task_t *k = g->kids[i];
    if (!k) continue;
    g->kids[i] = NULL;
    ml_task_cancel(k);
    ml_task_release(k, 0);
  }
}

/* The parent was cancelled (its request went away): cancel every child. */
static void gather_cancel(ml_task_t *parent) {
  gather_t *g = parent->wait;
  gather_cancel_kids(g);
  gather_free(parent->sched->L, g);
}

/* Pushes an error object for return_errors: { message = ..., traceback = ... }. */
static void push_task_error(lua_State *L, lua_State *from) {
  lua_createtable(L, 0, 2);
  lua_xmove(from, L, 1);
  lua_setfield(L, -2, "error");
  lua_pushlightuserdata(L, (void *)&task_err_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_setmetatable(L, -2);
}

static void gather_child_done(ml_task_t *k, int st) {
  gather_t *g = k->owner;
  lua_State *L = k->sched->L;
  int ok = st == 0 && lua_toboolean(k->co, 1);
  g->kids[k->index] = NULL;
  g->remaining--;
  if (ok || g->return_errors) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->results_ref);
    if (ok) {
      /* (true, r1, r2, ...): keep r1 alone, like a call adjusted to one value; nil when
       * the function returned nothing. A function's "nil, err" thus gives nil. */
      lua_settop(k->co, 2);
      lua_xmove(k->co, L, 1);
    } else {
      push_task_error(L, k->co);
    }
    lua_rawseti(L, -2, k->index + 1);
    lua_pop(L, 1);
    ml_task_release(k, st == 0);
    if (g->remaining > 0) return;
    if (g->parent->cancel != gather_cancel) return;   /* still starting: l_gather ends */
    ml_task_t *p = g->parent;
    lua_rawgeti(p->co, LUA_REGISTRYINDEX, g->results_ref);
    lua_pushboolean(p->co, 1);
    lua_insert(p->co, -2);
    gather_free(L, g);
    ml_task_wake(p, 2);
    return;
  }
  /* the first failure: cancel the others, hand the error to the parent */
  g->failed = 1;
  ml_task_t *p = g->parent;
  int waiting = p->cancel == gather_cancel;
  lua_pushboolean(p->co, 0);
  lua_xmove(k->co, p->co, 1);
  ml_task_release(k, 0);
  gather_cancel_kids(g);
  if (!waiting) return;   /* l_gather is still starting children; it sees g->failed */
  gather_free(L, g);
  ml_task_wake(p, 2);
}

/* gather([opts,] f1, f2, ...) -> true, results | false, err   (wrapped in Lua) */
static int l_gather(lua_State *L) {
  int first = 1, return_errors = 0;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "return_errors");
    return_errors = lua_toboolean(L, -1);
    lua_pop(L, 1);
    first = 2;
  }
  int n = lua_gettop(L) - first + 1;
  for (int i = first; i <= lua_gettop(L); i++) luaL_checktype(L, i, LUA_TFUNCTION);
  ml_task_t *p = ml_task_current(L);
  ml_sched_t *s = p->sched;
  gather_t *g = ml_xcalloc(1, sizeof *g);
  g->parent = p;
  g->n = n;
  g->remaining = n;
  g->return_errors = return_errors;
  g->kids = ml_xcalloc((size_t)n + 1, sizeof *g->kids);
  lua_createtable(L, n, 0);
  g->results_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, first + i);
    g->kids[i] = ml_task_child(L, s, 0, gather_child_done, g);
    g->kids[i]->index = i;
    g->kids[i]->parent = p;
  }
  /* Start them in order. A child may end (or fail) at once; p->cancel stays unset while
   * starting so the done callbacks leave the result to this function. */
  int base = lua_gettop(L);
  for (int i = 0; i < n && !g->failed; i++)
    if (g->kids[i]) ml_task_resume(g->kids[i], 1);
  if (g->failed) {   /* (false, err) were pushed on p->co == L by the failing child */
    gather_free(s->L, g);
    return lua_gettop(L) - base;
  }
  if (g->remaining == 0) {
    lua_pushboolean(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->results_ref);
    gather_free(s->L, g);
    return 2;
  }
  return ml_task_wait(L, p, gather_cancel, g);
}

void ml_gather_open(lua_State *L) {
  lua_pushcfunction(L, l_gather);
  lua_setfield(L, -2, "gather");
  lua_pushlightuserdata(L, (void *)&task_err_key);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "task_error_mt");
  lua_rawset(L, LUA_REGISTRYINDEX);
}
