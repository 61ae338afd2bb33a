/* Development mode's 500 for what C finds wrong in a response (see error_page.h). */
#include "error_page.h"
#include "core.h"
#include "lresponse.h"
#include <lauxlib.h>

int ml_error_page_build(lua_State *L, const ml_request_t *r, const char *msg, ml_buf_t *out,
                        ml_buf_t *scratch, int *keepalive, int head) {
  if (!ml_core_dev_mode()) return -1;
  int top = lua_gettop(L);
  /* runtime.lua loaded it: package.loaded["moonlet.error_page"].response */
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
  lua_getfield(L, -1, "moonlet.error_page");
  if (!lua_istable(L, -1)) {
    lua_settop(L, top);
    return -1;
  }
  lua_getfield(L, -1, "response");
  lua_pushstring(L, r->method);
  lua_pushlstring(L, r->path, r->path_len);
  size_t len = 0;
  const char *accept = r->headers ? ml_headers_get(r->headers, "accept", &len) : NULL;
  if (accept) lua_pushlstring(L, accept, len);
  else lua_pushnil(L);
  lua_pushstring(L, msg);
  int status = -1;
  if (lua_pcall(L, 4, 3, 0) == 0) {
    char err[200];
    status = ml_lresp_build(L, lua_gettop(L) - 2, out, scratch, keepalive, head, err,
                            sizeof err);
  }
  lua_settop(L, top);
  return status;
}
