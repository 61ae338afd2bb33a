/* moonlet.jobs's figures in the metrics region (metrics.h): a small fixed table of queues
 * per slot, named by the worker that consumes them (a slot is one process, and a process
 * consumes few queues), recorded by lua/moonlet/jobs.lua through two functions of
 * moonlet.core, rendered by metrics_render.c. Everything happens on the loop's thread
 * (job tasks are coroutines; a pooled task's figures are recorded around its wait). */
#include "metrics_region.h"
#include <lauxlib.h>
#include <string.h>

/* Only the loop's thread names queues; the renderer reads nqueues with acquire. */
int ml_metrics_queue(const char *name) {
  ml_metrics_slot_t *s = ml_metrics_mine();
  size_t len = strlen(name);
  if (!s || len == 0 || len >= ML_METRICS_QUEUE_MAX) return -1;
  uint32_t n = __atomic_load_n(&s->nqueues, __ATOMIC_ACQUIRE);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(s->queues[i].name, name) == 0) return (int)i;
  if (n >= ML_METRICS_QUEUES) return -1;
  memcpy(s->queues[n].name, name, len + 1);
  __atomic_store_n(&s->nqueues, n + 1, __ATOMIC_RELEASE);
  return (int)n;
}

/* jobs_metric_queue(name) -> the queue's index, or nil (metrics off, table full) */
static int l_queue(lua_State *L) {
  int i = ml_metrics_queue(luaL_checkstring(L, 1));
  if (i < 0) return 0;
  lua_pushinteger(L, i);
  return 1;
}

/* jobs_metric(index, kind, value): see metrics.h */
static int l_metric(lua_State *L) {
  static const char *const kinds[] = {"running", "length", "done", "failed", "retried",
                                      "dead", NULL};
  int i = (int)luaL_checkinteger(L, 1);
  int kind = luaL_checkoption(L, 2, NULL, kinds);
  double v = luaL_optnumber(L, 3, 0);
  ml_metrics_slot_t *s = ml_metrics_mine();
  if (!s || i < 0 || i >= ML_METRICS_QUEUES) return 0;
  ml_metrics_queue_t *q = &s->queues[i];
  switch (kind) {
  case 0: __atomic_add_fetch(&q->running, (int64_t)v, __ATOMIC_RELAXED); break;
  case 1: __atomic_store_n(&q->length, (int64_t)v, __ATOMIC_RELAXED); break;
  case 2: case 3:
    __atomic_add_fetch(&q->counts[kind == 2 ? ML_JOBS_DONE : ML_JOBS_FAILED], 1, __ATOMIC_RELAXED);
    ml_metrics_hist_add(&q->duration, v > 0 ? (uint64_t)(v * 1e9) : 0);
    break;
  default:
    __atomic_add_fetch(&q->counts[kind == 4 ? ML_JOBS_RETRIED : ML_JOBS_DEAD], 1, __ATOMIC_RELAXED);
  }
  return 0;
}

void ml_jobs_metrics_open(lua_State *L) {
  lua_pushcfunction(L, l_queue);
  lua_setfield(L, -2, "jobs_metric_queue");
  lua_pushcfunction(L, l_metric);
  lua_setfield(L, -2, "jobs_metric");
}
