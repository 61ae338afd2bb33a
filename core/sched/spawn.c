/* moonlet.spawn: a detached task (see sched.h). */
#include "sched.h"
#include "core.h"
#include "log.h"
#include <lauxlib.h>

static void spawn_done(ml_task_t *t, int st) {
  ml_sched_t *s = t->sched;
  if (st != 0 || !lua_toboolean(t->co, 1)) {
    const char *msg = lua_tostring(t->co, -1);
    ml_log(ML_LOG_ERROR, "spawned task failed: %s", msg ? msg : "(error object)");
  }
  int background = t->background;
  ml_task_release(t, st == 0);
  if (background && --s->background == 0 && s->background_idle_cb) s->background_idle_cb(s);
}

/* Whether t is a request's work: the request's own task, a task it runs (gather,
 * timeout) or one it spawned, at any depth. */
static int from_request(const ml_task_t *t) {
  for (; t; t = t->parent)
    if (t->route >= 0 || t->background) return 1;
  return 0;
}

void ml_spawn(lua_State *L, ml_sched_t *s, int nargs, int background) {
  ml_task_t *c = ml_task_child(L, s, nargs, spawn_done, NULL);
  if (background) {
    c->background = 1;
    s->background++;
  }
  ml_task_resume(c, nargs + 1);
}

/* spawn(fn, ...): runs fn(...) as a detached task; it starts at once and runs until it
 * first waits. Its errors are logged with a traceback. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ml_sched_t *s = ml_sched_of(L);
  ml_spawn(L, s, lua_gettop(L) - 1, from_request(s->current));
  return 0;
}


void ml_spawn_open(lua_State *L) {
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
}
