/* The embedder's C modules in every Lua state (see preload.h). */
#include "preload.h"
#include "mem.h"
#include "moonlet.h"
#include <stdlib.h>
#include <string.h>

#define USERDATA_KEY "moonlet.userdata"   /* registry: the embedder's pointer */

typedef struct {
  char *name;
  lua_CFunction open;
} module_t;

struct ml_preload_s {
  module_t *mods;
  int n;
  void *userdata;
};

ml_preload_t *ml_preload_new(void) {
  return ml_xcalloc(1, sizeof(ml_preload_t));
}

void ml_preload_free(ml_preload_t *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) free(p->mods[i].name);
  free(p->mods);
  free(p);
}

/* moonlet's own modules come from package.preload too: an embedder's would replace them. */
static int reserved(const char *name) {
  return strcmp(name, "moonlet") == 0 || strncmp(name, "moonlet.", 8) == 0 ||
         strcmp(name, "cjson") == 0;
}

int ml_preload_add(ml_preload_t *p, const char *name, lua_CFunction open) {
  if (!name || !*name || !open || reserved(name)) return -1;
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->mods[i].name, name) == 0) {
      p->mods[i].open = open;
      return 0;
    }
  p->mods = ml_xrealloc(p->mods, (size_t)(p->n + 1) * sizeof *p->mods);
  p->mods[p->n].name = ml_xstrdup(name);
  p->mods[p->n++].open = open;
  return 0;
}

void ml_preload_set_userdata(ml_preload_t *p, void *userdata) {
  p->userdata = userdata;
}

void *ml_preload_userdata(const ml_preload_t *p) {
  return p ? p->userdata : NULL;
}

void ml_preload_install(const ml_preload_t *p, lua_State *L) {
  if (!p) return;
  lua_pushlightuserdata(L, p->userdata);
  lua_setfield(L, LUA_REGISTRYINDEX, USERDATA_KEY);
  if (p->n == 0) return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  for (int i = 0; i < p->n; i++) {
    lua_pushlightuserdata(L, p->userdata);
    lua_pushcclosure(L, p->mods[i].open, 1);
    lua_setfield(L, -2, p->mods[i].name);
  }
  lua_pop(L, 2);
}

void *ml_lua_userdata(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, USERDATA_KEY);
  void *u = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return u;
}
