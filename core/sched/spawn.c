/* moonlet.spawn: a detached task (see sched.h). */
#include "sched.h"
#include "core.h"
#include "log.h"
#include <lauxlib.h>

static void spawn_done(ml_task_t *t, int st) {
  if (st != 0 || !lua_toboolean(t->co, 1)) {
    const char *msg = lua_tostring(t->co, -1);
    ml_log(ML_LOG_ERROR, "spawned task failed: %s", msg ? msg : "(error object)");
  }
  ml_task_release(t, st == 0);
}

void ml_spawn(lua_State *L, ml_sched_t *s, int nargs) {
  ml_task_t *c = ml_task_child(L, s, nargs, spawn_done, NULL);
  ml_task_resume(c, nargs + 1);
}

/* spawn(fn, ...): runs fn(...) as a detached task; it starts at once and runs until it
 * first waits. Its errors are logged with a traceback. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  ml_spawn(L, ml_sched_of(L), lua_gettop(L) - 1);
  return 0;
}


void ml_spawn_open(lua_State *L) {
  lua_pushcfunction(L, l_spawn);
  lua_setfield(L, -2, "spawn");
}
