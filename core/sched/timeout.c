/* moonlet.timeout: one child task against the parent's timer (see sched.h). */
#include "sched.h"
#include "core.h"
#include <lauxlib.h>

/* timeout: one child and the parent's timer */
static void timeout_kid_done(ml_task_t *k, int st) {
  ml_task_t *p = k->parent;
  ml_task_timer_stop(p);
  int waiting = p->cancel != NULL;
  int n = lua_gettop(k->co);
  lua_pushboolean(p->co, 1);   /* "finished" marker, then (ok, results...) */
  if (st != 0) {
    lua_pushboolean(p->co, 0);
    lua_xmove(k->co, p->co, 1);
    n = 1;
  }
  lua_xmove(k->co, p->co, st != 0 ? 0 : n);
  p->wait = NULL;
  ml_task_release(k, st == 0);
  if (waiting) ml_task_wake(p, st != 0 ? 3 : n + 1);
  else p->sync_results = st != 0 ? 3 : n + 1;   /* l_timeout returns them */
}

static void timeout_cancel(ml_task_t *p) {
  ml_task_timer_stop(p);
  ml_task_t *k = p->wait;
  if (k) {
    ml_task_cancel(k);
    ml_task_release(k, 0);
  }
}

static void timeout_fire_cb(uv_timer_t *h) {
  ml_task_t *p = h->data;
  ml_task_t *k = p->wait;
  ml_task_cancel(k);
  ml_task_release(k, 0);
  lua_pushnil(p->co);
  ml_task_wake(p, 1);
}

/* timeout(seconds, fn, ...) -> true, ok, results... | nil (timed out)   (wrapped in Lua) */
static int l_timeout(lua_State *L) {
  uint64_t ms = ml_sched_check_ms(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  ml_task_t *p = ml_task_current(L);
  int nargs = lua_gettop(L) - 2;
  ml_task_t *k = ml_task_child(L, p->sched, nargs, timeout_kid_done, NULL);
  k->parent = p;
  p->sync_results = 0;
  int base = lua_gettop(L);
  ml_task_resume(k, nargs + 1);
  if (p->sync_results) return lua_gettop(L) - base;   /* finished without waiting */
  uv_timer_start(ml_task_timer(p), timeout_fire_cb, ms, 0);
  return ml_task_wait(L, p, timeout_cancel, k);
}

void ml_timeout_open(lua_State *L) {
  lua_pushcfunction(L, l_timeout);
  lua_setfield(L, -2, "timeout");
}
