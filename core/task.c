/* Tasks and the primitives built on them alone: sleep, spawn, gather, timeout
 * (see sched.h for the model). */
#include "task.h"
#include "mem.h"
#include "log.h"
#include <assert.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char sched_key = 's';     /* registry[&sched_key] = ml_sched_t* */
static const char tramp_key = 't';     /* registry[&tramp_key] = function(f, ...) xpcall */
static const char task_err_key = 'e';  /* registry[&task_err_key] = metatable of errors */

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
  uv_timer_init(loop, &s->root.timer);
  s->root.timer.data = &s->root;
  lua_pushlightuserdata(L, (void *)&sched_key);
  lua_pushlightuserdata(L, s);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

static void task_closed_cb(uv_handle_t *h) {
  ml_task_t *t = h->data;
  if (t != &t->sched->root) free(t);
}

/* The root timer closes last of the scheduler's handles (libuv runs close callbacks in
 * order), so the scheduler's owner may free it here. */
static void root_closed_cb(uv_handle_t *h) {
  ml_sched_t *s = ((ml_task_t *)h->data)->sched;
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
    uv_close((uv_handle_t *)&t->timer, task_closed_cb);
    t = next;
  }
  s->all_tasks = NULL;
  s->free_tasks = NULL;
  ml_sched_hook_t *h = s->close_hooks;
  s->close_hooks = NULL;
  while (h) {
    ml_sched_hook_t *next = h->next;   /* fn may free h */
    h->fn(s, h->data);
    h = next;
  }
  uv_close((uv_handle_t *)&s->root.timer, root_closed_cb);
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
    uv_timer_init(s->loop, &t->timer);
    t->timer.data = t;
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
  if (!prev) {
    s->busy_route = t->route;
    s->busy_since = uv_hrtime();
  }
  int st = lua_resume(t->co, nargs);
  s->current = prev;
  if (!prev) {
    uint64_t since = s->busy_since;
    s->busy_since = 0;
    if (s->warn_ns) {
      uint64_t ns = uv_hrtime() - since;
      if (ns > s->warn_ns) s->report_stall(s, since, ns, t->route, 0);
    }
  }
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
    t->woken = nresults;
    return;
  }
  ml_task_resume(t, nresults);
}

/* --- sleep ------------------------------------------------------------------------- */

static void sleep_cb(uv_timer_t *h) {
  ml_task_wake(h->data, 0);
}

static void timer_cancel(ml_task_t *t) {
  uv_timer_stop(&t->timer);
}

static uint64_t checkms(lua_State *L, int idx) {
  double s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0 && s < 1e9, idx, "expected a non-negative number of seconds");
  return (uint64_t)ceil(s * 1000);
}

/* sleep(seconds) */
static int l_sleep(lua_State *L) {
  uint64_t ms = checkms(L, 1);
  ml_task_t *t = ml_task_current(L);
  uv_timer_start(&t->timer, sleep_cb, ms, 0);
  return ml_task_wait(L, t, timer_cancel, NULL);
}

/* --- child tasks ---------------------------------------------------------------------- */

/* A coroutine task running fn(...) (fn and its nargs arguments on top of L, popped) under
 * the xpcall trampoline: it ends with (true, results...) or (false, error). */
static ml_task_t *child_new(lua_State *L, ml_sched_t *s, int nargs, ml_done_fn done,
                            void *owner) {
  ml_task_t *c = ml_task_new(s, done, owner);
  lua_pushlightuserdata(c->co, (void *)&tramp_key);
  lua_rawget(c->co, LUA_REGISTRYINDEX);
  lua_xmove(L, c->co, nargs + 1);
  return c;
}

static void spawn_done(ml_task_t *t, int st) {
  if (st != 0 || !lua_toboolean(t->co, 1)) {
    const char *msg = lua_tostring(t->co, -1);
    ml_log(ML_LOG_ERROR, "spawned task failed: %s", msg ? msg : "(error object)");
  }
  ml_task_release(t, st == 0);
}

/* spawn(fn, ...): runs fn(...) as a detached task; it starts at once and runs until it
 * first waits. Its errors are logged with a traceback. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ml_sched_t *s = ml_sched_of(L);
  int nargs = lua_gettop(L) - 1;
  ml_task_t *c = child_new(L, s, nargs, spawn_done, NULL);
  ml_task_resume(c, nargs + 1);
  return 0;
}

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
    g->kids[i] = child_new(L, s, 0, gather_child_done, g);
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

/* timeout: one child and the parent's timer */
static void timeout_kid_done(ml_task_t *k, int st) {
  ml_task_t *p = k->parent;
  uv_timer_stop(&p->timer);
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
  uv_timer_stop(&p->timer);
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
  uint64_t ms = checkms(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  ml_task_t *p = ml_task_current(L);
  int nargs = lua_gettop(L) - 2;
  ml_task_t *k = child_new(L, p->sched, nargs, timeout_kid_done, NULL);
  k->parent = p;
  p->sync_results = 0;
  int base = lua_gettop(L);
  ml_task_resume(k, nargs + 1);
  if (p->sync_results) return lua_gettop(L) - base;   /* finished without waiting */
  uv_timer_start(&p->timer, timeout_fire_cb, ms, 0);
  return ml_task_wait(L, p, timeout_cancel, k);
}

void ml_sched_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"sleep", l_sleep}, {"spawn", l_spawn}, {"gather", l_gather},
                                 {"timeout", l_timeout}, {NULL, NULL}};
  luaL_register(L, NULL, fns);
  lua_pushlightuserdata(L, (void *)&tramp_key);
  luaL_loadstring(L, "local xpcall, tb = xpcall, debug.traceback\n"
                     "return function(f, ...) return xpcall(f, tb, ...) end");
  lua_call(L, 0, 1);
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, (void *)&task_err_key);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "task_error_mt");
  lua_rawset(L, LUA_REGISTRYINDEX);
}
