/* Creating and preparing Lua states (see lstate.h). */
#include "lstate.h"
#include "err.h"
#include "json.h"
#include "lua_embed.h"
#include "preload.h"
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int luaopen_cjson(lua_State *L);
#include "core.h"

#ifdef ML_SANITIZE
static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}
#endif

/* package.preload loader for an embedded module; upvalue 1 is its ml_embedded_t. */
static int load_embedded(lua_State *L) {
  const ml_embedded_t *m = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbuffer(L, m->src, m->len, m->chunk)) return lua_error(L);
  lua_pushstring(L, m->module);
  lua_call(L, 1, 1);
  return 1;
}

int ml_lua_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_pushstring(L, msg);
  lua_pushinteger(L, 2);
  lua_call(L, 2, 1);
  return 1;
}

/* The tree moonlet is installed in, when the running binary is TREE/bin/x and
 * TREE/share/lua/5.1/moonlet/init.lua exists (make install, luarocks make): writes TREE
 * into tree and returns 1; 0 otherwise (the checkout's build/moonlet, an embedding host
 * elsewhere). */
static int installed_tree(char tree[4096]) {
  ssize_t len = readlink("/proc/self/exe", tree, 4095);
  if (len <= 0) return 0;
  tree[len] = '\0';
  for (int up = 0; up < 2; up++) {   /* TREE/bin/moonlet -> TREE */
    char *slash = strrchr(tree, '/');
    if (!slash || slash == tree) return 0;
    *slash = '\0';
  }
  char probe[4096 + 64];   /* tree (< 4096) and the suffix */
  struct stat st;
  snprintf(probe, sizeof probe, "%s/share/lua/5.1/moonlet/init.lua", tree);
  return stat(probe, &st) == 0;
}

/* package.path/cpath gain the tree's Lua directories first (APPDIR's go before them), so an
 * app finds the rocks installed beside moonlet (luarocks --tree TREE install x). moonlet's
 * own modules are there too, but package.preload comes first: require "moonlet" gets the
 * embedded copy (README "Install" says why). */
static void add_tree_paths(lua_State *L) {
  char tree[4096];
  if (!installed_tree(tree)) return;
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/share/lua/5.1/?.lua;%s/share/lua/5.1/?/init.lua;%s", tree, tree,
                  lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  lua_pushfstring(L, "%s/lib/lua/5.1/?.so;%s", tree, lua_tostring(L, -1));
  lua_setfield(L, -3, "cpath");
  lua_pop(L, 1);
}

lua_State *ml_lua_new(const char *appdir, const ml_preload_t *preload) {
#ifdef ML_SANITIZE
  lua_State *L = lua_newstate(l_alloc, NULL);
  if (!L) L = luaL_newstate();   /* LuaJIT builds without GC64 refuse foreign allocators */
#else
  lua_State *L = luaL_newstate();
#endif
  if (!L) return NULL;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pushcfunction(L, ml_core_open);
  lua_setfield(L, -2, "moonlet.core");
  for (const ml_embedded_t *m = ml_embedded; m->module; m++) {
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, m->module);
  }
  lua_pop(L, 1);   /* preload */
  add_tree_paths(L);
  if (appdir) {
    lua_pushstring(L, appdir);   /* for app:static's relative directories (static_mount.c) */
    lua_setfield(L, LUA_REGISTRYINDEX, "moonlet.appdir");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", appdir, appdir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
  }
  lua_pop(L, 1);   /* package */
  lua_newtable(L);   /* the array marker metatable, shared by json and moonlet.array */
  lua_setfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
  ml_preload_install(preload, L);
  return L;
}

/* Copies a load error into err as one line: the message without its traceback, each line
 * break (with the tabs after it) made a space. A module that app.lua requires and that does
 * not compile comes as "error loading module 'm' from file 'f':" with its own
 * "f:line: reason" on the next line. */
static void error_line(char *err, size_t errlen, const char *msg) {
  if (errlen == 0) return;
  if (!msg) msg = "error";
  const char *tb = strstr(msg, "\nstack traceback:");
  size_t len = tb ? (size_t)(tb - msg) : strlen(msg), n = 0;
  for (size_t i = 0; i < len && n + 1 < errlen; i++) {
    if (msg[i] != '\n') {
      err[n++] = msg[i];
      continue;
    }
    err[n++] = ' ';
    while (i + 1 < len && msg[i + 1] == '\t') i++;
  }
  err[n] = '\0';
}

int ml_lua_load_app(lua_State *L, const char *appdir, char *err, size_t errlen) {
  struct stat st;
  if (stat(appdir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    return ml_err(err, errlen, "app directory not found: %s", appdir);
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/app.lua", appdir);
  if (stat(path, &st) != 0) {
    return ml_err(err, errlen, "no app.lua in %s", appdir);
  }
  lua_pushcfunction(L, ml_lua_traceback);
  int base = lua_gettop(L);
  if (luaL_loadfile(L, path) || lua_pcall(L, 0, 1, base)) {
    error_line(err, errlen, lua_tostring(L, -1));
    lua_settop(L, base - 1);
    return -1;
  }
  lua_remove(L, base);
  return 0;
}
