/* The embedder's C modules in every Lua state (see preload.h). */
#include "preload.h"
#include "mem.h"
#include "moonlet.h"
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define USERDATA_KEY "moonlet.userdata"   /* registry: the embedder's pointer */

typedef struct {
  char *name;
  lua_CFunction open;        /* a lua_CFunction module; NULL for an FFI one: */
  char *cdef, *ctype;        /* what ffi.cdef declares, and the api's type (its struct) */
  const void *api;           /* the embedder's struct of function pointers */
} module_t;

struct ml_preload_s {
  module_t *mods;
  int n;
  void *userdata;
};

ml_preload_t *ml_preload_new(void) {
  return ml_xcalloc(1, sizeof(ml_preload_t));
}

static void module_clear(module_t *m) {
  free(m->cdef);
  free(m->ctype);
  m->cdef = m->ctype = NULL;
  m->open = NULL;
  m->api = NULL;
}

void ml_preload_free(ml_preload_t *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) {
    module_clear(&p->mods[i]);
    free(p->mods[i].name);
  }
  free(p->mods);
  free(p);
}

/* moonlet's own modules come from package.preload too: an embedder's would replace them. */
static int reserved(const char *name) {
  return strcmp(name, "moonlet") == 0 || strncmp(name, "moonlet.", 8) == 0 ||
         strcmp(name, "cjson") == 0;
}

/* The entry for name, new (zeroed) or emptied for its replacement; NULL if reserved. */
static module_t *entry(ml_preload_t *p, const char *name) {
  if (!name || !*name || reserved(name)) return NULL;
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->mods[i].name, name) == 0) {
      module_clear(&p->mods[i]);
      return &p->mods[i];
    }
  p->mods = ml_xrealloc(p->mods, (size_t)(p->n + 1) * sizeof *p->mods);
  module_t *m = &p->mods[p->n++];
  memset(m, 0, sizeof *m);
  m->name = ml_xstrdup(name);
  return m;
}

int ml_preload_add(ml_preload_t *p, const char *name, lua_CFunction open) {
  module_t *m = open ? entry(p, name) : NULL;
  if (!m) return -1;
  m->open = open;
  return 0;
}

int ml_preload_add_ffi(ml_preload_t *p, const char *name, const char *cdef, const char *ctype,
                       const void *api) {
  module_t *m = cdef && ctype && *ctype && api ? entry(p, name) : NULL;
  if (!m) return -1;
  m->cdef = ml_xstrdup(cdef);
  m->ctype = ml_xstrdup(ctype);
  m->api = api;
  return 0;
}

void ml_preload_set_userdata(ml_preload_t *p, void *userdata) {
  p->userdata = userdata;
}

void *ml_preload_userdata(const ml_preload_t *p) {
  return p ? p->userdata : NULL;
}

/* package.preload's loader of an FFI module: upvalues cdef, ctype and the api pointer. The
 * declarations run once per state: a reload's require finds ctype declared already (ffi.cdef
 * refuses a second definition). */
static const char ffi_open_lua[] =
    "local cdef, ctype, api = ...\n"
    "local ffi = require 'ffi'\n"
    "if not pcall(ffi.typeof, ctype) then ffi.cdef(cdef) end\n"
    "return ffi.cast(ctype .. ' *', api)\n";

static int open_ffi(lua_State *L) {
  if (luaL_loadbuffer(L, ffi_open_lua, sizeof ffi_open_lua - 1, "=ml_host_preload_ffi"))
    return lua_error(L);
  for (int i = 1; i <= 3; i++) lua_pushvalue(L, lua_upvalueindex(i));
  lua_call(L, 3, 1);
  return 1;
}

void ml_preload_install(const ml_preload_t *p, lua_State *L) {
  if (!p) return;
  lua_pushlightuserdata(L, p->userdata);
  lua_setfield(L, LUA_REGISTRYINDEX, USERDATA_KEY);
  if (p->n == 0) return;
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  for (int i = 0; i < p->n; i++) {
    const module_t *m = &p->mods[i];
    if (m->open) {
      lua_pushlightuserdata(L, p->userdata);
      lua_pushcclosure(L, m->open, 1);
    } else {
      lua_pushstring(L, m->cdef);
      lua_pushstring(L, m->ctype);
      lua_pushlightuserdata(L, (void *)m->api);
      lua_pushcclosure(L, open_ffi, 3);
    }
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 2);
}

void *ml_lua_userdata(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, USERDATA_KEY);
  void *u = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return u;
}
