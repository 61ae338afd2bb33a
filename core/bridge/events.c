/* Events from the embedder's threads to app:on_event handlers (see events.h). */
#include "events.h"
#include "app.h"
#include "json.h"
#include "log.h"
#include "mem.h"
#include <string.h>

typedef struct {
  ml_app_t *const *app;
  size_t event_len, json_len;
  int has_json;
  char data[];               /* the event's name, NUL, then the JSON text */
} event_t;

/* On the loop: spawns runtime.event(app, name, json) in the app serving now. */
static void deliver(void *arg) {
  event_t *e = arg;
  ml_app_t *a = *e->app;
  if (!a) {
    ml_log(ML_LOG_DEBUG, "event %s: no app loaded, dropped", e->data);
    free(e);
    return;
  }
  lua_State *L = a->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_getfield(L, -1, "moonlet.runtime");
  lua_getfield(L, -1, "event");
  lua_replace(L, -3);
  lua_pop(L, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->app_ref);
  lua_pushlstring(L, e->data, e->event_len);
  if (e->has_json) lua_pushlstring(L, e->data + e->event_len + 1, e->json_len);
  else lua_pushnil(L);
  free(e);
  ml_spawn(L, &a->sched, 3, 0);
}

int ml_events_emit(ml_post_t *q, ml_app_t *const *app, const char *event, const char *json) {
  size_t elen = strlen(event), jlen = json ? strlen(json) : 0;
  char err[160];
  if (json && ml_json_check(json, jlen, err, sizeof err)) {
    ml_log(ML_LOG_WARN, "ml_host_emit(\"%s\"): %s", event, err);
    return -1;
  }
  event_t *e = ml_xmalloc(sizeof *e + elen + jlen + 2);
  e->app = app;
  e->event_len = elen;
  e->json_len = jlen;
  e->has_json = json != NULL;
  memcpy(e->data, event, elen + 1);
  if (json) memcpy(e->data + elen + 1, json, jlen + 1);
  if (ml_post_push(q, deliver, e) == 0) return 0;
  free(e);
  return -1;
}
