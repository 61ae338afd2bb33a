/* What the database drivers share (see db.h): parameters copied out of Lua and the shapes
 * of results. */
#include "db.h"
#include "buf.h"
#include "json.h"
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ml_db_val_t *ml_db_params(lua_State *L, int first, int *n) {
  int top = lua_gettop(L);
  *n = top >= first ? top - first + 1 : 0;
  for (int i = first; i <= top; i++) {   /* check everything before allocating */
    int tp = lua_type(L, i);
    if (tp == LUA_TNIL || tp == LUA_TBOOLEAN || tp == LUA_TNUMBER || tp == LUA_TSTRING) continue;
    if (tp == LUA_TLIGHTUSERDATA && lua_touserdata(L, i) == NULL) continue;   /* moonlet.null */
    luaL_error(L, "bad parameter #%d (expected nil, moonlet.null, boolean, number or string, "
                  "got %s)", i - first + 1, luaL_typename(L, i));
  }
  if (*n == 0) return NULL;
  ml_db_val_t *v = calloc((size_t)*n, sizeof *v);
  if (!v) abort();
  for (int k = 0; k < *n; k++) {
    int i = first + k;
    switch (lua_type(L, i)) {
    case LUA_TBOOLEAN:
      v[k].type = ML_DB_BOOL;
      v[k].i = lua_toboolean(L, i);
      break;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, i);
      if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        v[k].type = ML_DB_INT;
        v[k].i = (int64_t)d;
      } else {
        v[k].type = ML_DB_FLOAT;
        v[k].d = d;
      }
      break;
    }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, i, &len);
      v[k].type = ML_DB_TEXT;
      v[k].s = malloc(len + 1);
      if (!v[k].s) abort();
      memcpy(v[k].s, s, len);
      v[k].s[len] = '\0';
      v[k].len = len;
      break;
    }
    default:
      v[k].type = ML_DB_NULL;
    }
  }
  return v;
}

void ml_db_params_free(ml_db_val_t *v, int n) {
  for (int k = 0; k < n; k++) free(v[k].s);
  free(v);
}

void ml_db_push_exec(lua_State *L, int64_t changes, int has_id, int64_t last_id) {
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, (lua_Number)changes);
  lua_setfield(L, -2, "changes");
  if (has_id) {
    lua_pushnumber(L, (lua_Number)last_id);
    lua_setfield(L, -2, "last_id");
  }
}

void ml_db_push_rows(lua_State *L, int nrows) {
  lua_createtable(L, nrows, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
  lua_setmetatable(L, -2);
}

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
