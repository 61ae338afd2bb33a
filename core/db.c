/* What the database drivers share (see db.h). */
#include "db.h"
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

const char *ml_db_checksql(lua_State *L, int idx, size_t *len) {
  luaL_argcheck(L, lua_type(L, idx) == LUA_TSTRING, idx, "expected the SQL text (a string)");
  return lua_tolstring(L, idx, len);
}

void ml_db_register(lua_State *L, const ml_db_driver_t *d) {
  const luaL_Reg methods[] = {{"run", d->run}, {"acquire", d->acquire}, {"close", d->close},
                              {NULL, NULL}};
  luaL_newmetatable(L, d->handle_mt);
  lua_newtable(L);
  luaL_register(L, NULL, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, d->close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, d->lease_mt);
  lua_newtable(L);
  lua_pushcfunction(L, d->release);
  lua_setfield(L, -2, "release");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, d->lease_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_pushcfunction(L, d->open);
  lua_setfield(L, -2, d->open_name);
}

void ml_db_open(lua_State *L) {
  ml_db_sqlite_open(L);
  ml_db_pg_open(L);
}
