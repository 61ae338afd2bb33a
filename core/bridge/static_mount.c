/* app:static's C side (see static_mount.h). */
#include "static_mount.h"
#include "core.h"
#include <errno.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define APPDIR_KEY "moonlet.appdir"   /* the registry's copy of APPDIR (lstate.c sets it) */

/* static_dir(dir) -> the real path of dir (relative to APPDIR unless absolute), or nil and
 * why ("not found", "not a directory"). At load time: it blocks, as loading app.lua does. */
static int l_static_dir(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  if (dir[0] != '/') {
    lua_getfield(L, LUA_REGISTRYINDEX, APPDIR_KEY);
    const char *appdir = lua_tostring(L, -1);
    lua_pushfstring(L, "%s/%s", appdir ? appdir : ".", dir);
    dir = lua_tostring(L, -1);
  }
  char *real = realpath(dir, NULL);
  struct stat st;
  if (!real || stat(real, &st) != 0 || !S_ISDIR(st.st_mode)) {
    int notdir = real != NULL || errno == ENOTDIR;
    free(real);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", dir, notdir ? "not a directory" : strerror(errno));
    return 2;
  }
  lua_pushstring(L, real);
  free(real);
  return 1;
}

void ml_static_mount_open(lua_State *L) {
  lua_pushcfunction(L, l_static_dir);
  lua_setfield(L, -2, "static_dir");
}

ml_static_t *ml_static_mount_from(lua_State *L, int idx) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  lua_getfield(L, idx, "static_root");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_getfield(L, idx, "prefix_len");
  lua_getfield(L, idx, "index");
  lua_getfield(L, idx, "max_age");
  ml_static_t *m = ml_static_new(lua_tostring(L, -4), (size_t)lua_tointeger(L, -3),
                                 lua_isstring(L, -2) ? lua_tostring(L, -2) : NULL,
                                 lua_isnumber(L, -1) ? (long long)lua_tonumber(L, -1) : -1);
  lua_pop(L, 4);
  return m;
}
