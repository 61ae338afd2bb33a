/* The scheduler and its tasks (see sched.h for the model). The primitives built on it
 * alone sit beside it: sleep.c, spawn.c, gather.c, timeout.c. */
#include "sched.h"
#include "core.h"
#include "mem.h"
#include "log.h"
#include <assert.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char sched_key = 's';     /* registry[&sched_key] = ml_sched_t* */
static const char tramp_key = 't';     /* registry[&tramp_key] = function(f, ...) xpcall */

ml_sched_t *ml_sched_of(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&sched_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  ml_sched_t *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

void ml_sched_init(ml_sched_t *s, lua_State *L, uv_loop_t *loop) {
  memset(s, 0, sizeof *s);
  s->loop = loop;
  s->L = L;
  s->root.sched = s;
  s->root.blocking = 1;
  s->root.route = -1;
  s->root.co_ref = LUA_NOREF;
  uv_timer_init(loop, &s->root_timer);
  s->root_timer.data = &s->root;
  s->root.timer = &s->root_timer;
  ml_sleep_init(s);
  ml_sched_bind(s);
}

void ml_sched_bind(ml_sched_t *s) {
  lua_pushlightuserdata(s->L, (void *)&sched_key);
  lua_pushlightuserdata(s->L, s);
  lua_rawset(s->L, LUA_REGISTRYINDEX);
}

uv_timer_t *ml_task_timer(ml_task_t *t) {
  if (!t->timer) {
    t->timer = ml_xmalloc(sizeof *t->timer);
    uv_timer_init(t->sched->loop, t->timer);
    t->timer->data = t;
  }
  return t->timer;
}

void ml_task_timer_stop(ml_task_t *t) {
  if (t->timer) uv_timer_stop(t->timer);
}

static void timer_closed_cb(uv_handle_t *h) {
  free(h);
}

/* The root timer closes last of the scheduler's handles (libuv runs close callbacks in
 * order): the tasks' timers are closed, so the tasks go, and the scheduler's owner may free
 * it here. */
static void root_closed_cb(uv_handle_t *h) {
  ml_sched_t *s = ((ml_task_t *)h->data)->sched;
  ml_task_t *t = s->all_tasks;
  while (t) {
    ml_task_t *next = t->next_all;
    free(t);
    t = next;
  }
  s->all_tasks = NULL;
  s->handles_closed = 1;
  if (s->closed_cb) s->closed_cb(s);
}

void ml_sched_close(ml_sched_t *s) {
  if (s->closed) return;
  s->closed = 1;
  ml_task_t *t = s->all_tasks;
  while (t) {
    ml_task_t *next = t->next_all;
    ml_task_cancel(t);
    if (t->timer) uv_close((uv_handle_t *)t->timer, timer_closed_cb);
    t = next;
  }
  s->free_tasks = NULL;   /* all_tasks go in root_closed_cb */
  ml_sched_hook_t *h = s->close_hooks;
  s->close_hooks = NULL;
  while (h) {
    ml_sched_hook_t *next = h->next;   /* fn may free h */
    h->fn(s, h->data);
    h = next;
  }
  ml_sleep_close(s);
  uv_close((uv_handle_t *)&s->root_timer, root_closed_cb);
}

void ml_sched_on_close(ml_sched_t *s, ml_sched_hook_t *h) {
  h->next = s->close_hooks;
  s->close_hooks = h;
}

ml_task_t *ml_task_new(ml_sched_t *s, ml_done_fn on_done, void *owner) {
  ml_task_t *t = s->free_tasks;
  if (t) {
    s->free_tasks = t->next_free;
  } else {
    t = ml_xcalloc(1, sizeof *t);
    t->sched = s;
    t->co_ref = LUA_NOREF;
    t->next_all = s->all_tasks;
    s->all_tasks = t;
  }
  if (t->co_ref == LUA_NOREF) {
    t->co = lua_newthread(s->L);
    t->co_ref = luaL_ref(s->L, LUA_REGISTRYINDEX);
  }
  t->on_done = on_done;
  t->owner = owner;
  t->parent = NULL;
  t->cancel = NULL;
  t->wait = NULL;
  t->route = -1;
  t->background = 0;
  t->released = 0;
  s->live++;
  return t;
}

void ml_task_release(ml_task_t *t, int reusable) {
  ml_sched_t *s = t->sched;
  assert(!t->released);
  t->released = 1;
  t->gen++;
  t->owner = NULL;
  t->parent = NULL;
  t->cancel = NULL;
  t->wait = NULL;
  if (reusable && lua_status(t->co) == 0) {
    lua_settop(t->co, 0);
  } else {   /* died or still suspended: let the GC have the coroutine */
    luaL_unref(s->L, LUA_REGISTRYINDEX, t->co_ref);
    t->co_ref = LUA_NOREF;
    t->co = NULL;
  }
  t->next_free = s->free_tasks;
  s->free_tasks = t;
  s->live--;
}

void ml_task_cancel(ml_task_t *t) {
  ml_cancel_fn fn = t->cancel;
  if (!fn) return;
  t->cancel = NULL;
  fn(t);
}

void ml_task_resume(ml_task_t *t, int nargs) {
  ml_sched_t *s = t->sched;
  ml_task_t *prev = s->current;
  s->current = t;
  t->cancel = NULL;
  t->wait = NULL;
  ml_sched_monitor_t *m = prev ? NULL : s->monitor;
  if (m) m->begin(m, s, t->route);
  int st = lua_resume(t->co, nargs);
  s->current = prev;
  if (m) m->end(m, s, t->route);
  if (st == LUA_YIELD) {
    if (t->cancel) return;   /* a primitive wakes it */
    lua_settop(t->co, 0);
    lua_pushstring(t->co, "a moonlet task yielded outside a moonlet primitive "
                          "(coroutine.yield in a handler?)");
    st = LUA_ERRRUN;
  }
  t->on_done(t, st);
}

ml_task_t *ml_task_current(lua_State *L) {
  ml_sched_t *s = ml_sched_of(L);
  if (!s) {
    luaL_error(L, "moonlet primitives need a state created by moonlet");
    return NULL;
  }
  ml_task_t *t = s->current;
  if (t && !t->blocking) {
    if (t->co != L)
      luaL_error(L, "a moonlet primitive was called from a coroutine moonlet does not run "
                    "(use moonlet.spawn or moonlet.gather instead of coroutine.*)");
    return t;
  }
  t = t ? t : &s->root;
  t->co = L;   /* a blocking task waits on whichever thread is running */
  /* The loop is not running between blocking waits, so its clock is stale: timers
   * started now must count from now. */
  uv_update_time(s->loop);
  return t;
}

int ml_task_wait(lua_State *L, ml_task_t *t, ml_cancel_fn cancel, void *wait) {
  t->cancel = cancel;
  t->wait = wait;
  if (!t->blocking) return lua_yield(L, 0);
  if (t->sched->no_wait) {   /* what the primitive started is cancelled */
    ml_task_cancel(t);
    t->wait = NULL;
    return luaL_error(L, "moonlet: app.lua waits while it loads, which would run the "
                      "embedder's loop (ml_host_new_on_loop): wait in app:on_startup instead");
  }
  t->woken = -1;
  while (t->woken < 0) {
    if (uv_run(t->sched->loop, UV_RUN_ONCE) == 0 && t->woken < 0) {
      ml_task_cancel(t);
      return luaL_error(L, "moonlet: waiting with nothing pending (internal error)");
    }
  }
  t->cancel = NULL;
  t->wait = NULL;
  return t->woken;
}

void ml_task_wake(ml_task_t *t, int nresults) {
  t->cancel = NULL;
  t->wait = NULL;
  if (t->blocking) {
    int waiting = t->woken < 0;
    t->woken = nresults;
    /* its wait runs the loop once at a time: a wake from a callback that runs before the
     * loop polls (a due timer, an idle handle) must not leave it blocked in that poll */
    if (waiting) uv_stop(t->sched->loop);
    return;
  }
  ml_task_resume(t, nresults);
}

/* --- child tasks ---------------------------------------------------------------------- */

ml_task_t *ml_task_child(lua_State *L, ml_sched_t *s, int nargs, ml_done_fn done,
                         void *owner) {
  ml_task_t *c = ml_task_new(s, done, owner);
  lua_pushlightuserdata(c->co, (void *)&tramp_key);
  lua_rawget(c->co, LUA_REGISTRYINDEX);
  lua_xmove(L, c->co, nargs + 1);
  return c;
}

uint64_t ml_sched_check_ms(lua_State *L, int idx) {
  double s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s < 1e9, idx, "expected a non-negative number of seconds");
  return (uint64_t)ceil(s * 1000);
}

void ml_sched_open(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&tramp_key);
  luaL_loadstring(L, "local xpcall, tb = xpcall, debug.traceback\n"
                     "return function(f, ...) return xpcall(f, tb, ...) end");
  lua_call(L, 0, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
}
