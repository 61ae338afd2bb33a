/* Lifespan hooks (see lifespan.h). */
#include "lifespan.h"
#include "mem.h"
#include <lauxlib.h>
#include <stdlib.h>

static const char *const phase_names[] = { "startup", "shutdown" };

/* on_done of the hooks' task: runtime.lifespan returned (true) or (false, err), or
 * failed itself (st != 0, the message on top). */
static void hooks_done(ml_task_t *t, int st) {
  ml_app_t *a = t->owner;
  int ok = st == 0 && lua_toboolean(t->co, 1);
  const char *m = ok ? NULL : lua_tostring(t->co, -1);
  char *msg = ok ? NULL : ml_xstrdup(m ? m : "(error object)");
  /* the task goes first: done may stop the app, which must then find it released */
  ml_task_release(t, st == 0);
  ml_lifespan_done_fn done = a->lifespan_done;
  void *ctx = a->lifespan_ctx;
  a->lifespan_done = NULL;
  a->lifespan_ctx = NULL;
  done(a, ok, msg, ctx);
  free(msg);
}

void ml_lifespan_start(ml_app_t *a, ml_lifespan_phase_t phase, ml_lifespan_done_fn done,
                       void *ctx) {
  a->lifespan_done = done;
  a->lifespan_ctx = ctx;
  ml_task_t *t = ml_task_new(&a->sched, hooks_done, a);
  lua_State *co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->lifespan_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, a->app_ref);
  lua_pushstring(co, phase_names[phase]);
  ml_task_resume(t, 2);
}

int ml_lifespan_count(ml_app_t *a, ml_lifespan_phase_t phase) {
  lua_State *L = a->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->app_ref);
  lua_getfield(L, -1, phase == ML_LIFESPAN_STARTUP ? "startup_hooks" : "shutdown_hooks");
  int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
  lua_pop(L, 2);
  return n;
}
