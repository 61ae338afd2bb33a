/* moonlet.cond(): a condition tasks wait on until another task notifies them (asyncio's
 * Condition without the lock: a Lua state runs one task at a time). c:wait() waits;
 * c:notify_all(v) wakes every waiting task, whose wait returns v; c:notify_one(v) wakes the
 * oldest. A cond belongs to the Lua state that made it (the loop's, or one pool thread's). */
#include "sched.h"
#include "core.h"
#include "list.h"
#include "mem.h"
#include <lauxlib.h>

#define COND_MT "moonlet.cond"

typedef struct {
  ml_list_t waiters;         /* of waiter_t, oldest first */
} cond_t;

typedef struct {
  ml_list_t link;
  ml_task_t *task;
} waiter_t;

static cond_t *check_cond(lua_State *L) {
  return luaL_checkudata(L, 1, COND_MT);
}

/* The waiting task is cancelled (its client left, a timeout ran out): it waits no more. */
static void waiter_cancel(ml_task_t *t) {
  waiter_t *w = t->wait;
  ml_list_remove(&w->link);
  free(w);
}

/* c:wait() -> the value the notifier gave */
static int l_wait(lua_State *L) {
  cond_t *c = check_cond(L);
  ml_task_t *t = ml_task_current(L);
  waiter_t *w = ml_xmalloc(sizeof *w);
  w->task = t;
  ml_list_push(&c->waiters, &w->link);
  return ml_task_wait(L, t, waiter_cancel, w);
}

/* Wakes the waiters in `list` with the value at slot 2 of L; returns how many. */
static int wake(lua_State *L, ml_list_t *list) {
  int n = 0;
  while (!ml_list_empty(list)) {
    waiter_t *w = ml_list_first(list, waiter_t, link);
    ml_list_remove(&w->link);
    ml_task_t *t = w->task;
    free(w);
    lua_pushvalue(L, 2);
    lua_xmove(L, t->co, 1);
    ml_task_wake(t, 1);   /* it may run now, and wait on this cond again: not in `list` */
    n++;
  }
  return n;
}

/* c:notify_all([v]) -> the number of tasks woken */
static int l_notify_all(lua_State *L) {
  cond_t *c = check_cond(L);
  lua_settop(L, 2);
  ml_list_t taken;
  ml_list_init(&taken);
  ml_list_take_all(&c->waiters, &taken);
  lua_pushinteger(L, wake(L, &taken));
  return 1;
}

/* c:notify_one([v]) -> 1 if a task was woken, else 0 */
static int l_notify_one(lua_State *L) {
  cond_t *c = check_cond(L);
  lua_settop(L, 2);
  ml_list_t one;
  ml_list_init(&one);
  if (!ml_list_empty(&c->waiters)) {
    waiter_t *w = ml_list_first(&c->waiters, waiter_t, link);
    ml_list_remove(&w->link);
    ml_list_push(&one, &w->link);
  }
  lua_pushinteger(L, wake(L, &one));
  return 1;
}

/* c:waiting() -> the number of tasks waiting */
static int l_waiting(lua_State *L) {
  cond_t *c = check_cond(L);
  int n = 0;
  ml_list_each(l, &c->waiters) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* cond() -> a new condition */
static int l_cond(lua_State *L) {
  cond_t *c = lua_newuserdata(L, sizeof *c);
  ml_list_init(&c->waiters);
  luaL_getmetatable(L, COND_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void ml_cond_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"wait", l_wait},
                                     {"notify_all", l_notify_all},
                                     {"notify_one", l_notify_one},
                                     {"waiting", l_waiting},
                                     {NULL, NULL}};
  ml_core_class(L, COND_MT, methods, NULL);
  lua_pushcfunction(L, l_cond);
  lua_setfield(L, -2, "cond");
}
