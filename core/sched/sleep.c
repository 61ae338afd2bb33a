/* moonlet.sleep: a task waits on its own timer (see sched.h). */
#include "sched.h"
#include "core.h"
#include <lauxlib.h>

static void sleep_cb(uv_timer_t *h) {
  ml_task_wake(h->data, 0);
}

static void timer_cancel(ml_task_t *t) {
  ml_task_timer_stop(t);
}

/* sleep(seconds) */
static int l_sleep(lua_State *L) {
  uint64_t ms = ml_sched_check_ms(L, 1);
  ml_task_t *t = ml_task_current(L);
  uv_timer_start(ml_task_timer(t), sleep_cb, ms, 0);
  return ml_task_wait(L, t, timer_cancel, NULL);
}

void ml_sleep_open(lua_State *L) {
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
}
