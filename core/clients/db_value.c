/* Values between Lua and the database drivers (see db_value.h). */
#include "db_value.h"
#include "mem.h"
#include "json.h"
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

ml_db_value_t *ml_db_value_params(lua_State *L, int first, int *n) {
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
  ml_db_value_t *v = ml_xcalloc((size_t)*n, sizeof *v);
  for (int k = 0; k < *n; k++) {
    int i = first + k;
    switch (lua_type(L, i)) {
    case LUA_TBOOLEAN:
      v[k].type = ML_DB_VALUE_BOOL;
      v[k].i = lua_toboolean(L, i);
      break;
    case LUA_TNUMBER: {
      double d = lua_tonumber(L, i);
      if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        v[k].type = ML_DB_VALUE_INT;
        v[k].i = (int64_t)d;
      } else {
        v[k].type = ML_DB_VALUE_FLOAT;
        v[k].d = d;
      }
      break;
    }
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, i, &len);
      v[k].type = ML_DB_VALUE_TEXT;
      v[k].s = ml_xmalloc(len + 1);
      memcpy(v[k].s, s, len);
      v[k].s[len] = '\0';
      v[k].len = len;
      break;
    }
    default:
      v[k].type = ML_DB_VALUE_NULL;
    }
  }
  return v;
}

void ml_db_value_free(ml_db_value_t *v, int n) {
  for (int k = 0; k < n; k++) free(v[k].s);
  free(v);
}

void ml_db_value_push_changes(lua_State *L, int64_t changes, int has_id, int64_t last_id) {
  lua_createtable(L, 0, 2);
  lua_pushnumber(L, (lua_Number)changes);
  lua_setfield(L, -2, "changes");
  if (has_id) {
    lua_pushnumber(L, (lua_Number)last_id);
    lua_setfield(L, -2, "last_id");
  }
}

void ml_db_value_push_rows(lua_State *L, int nrows) {
  lua_createtable(L, nrows, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, ML_ARRAY_MT);
  lua_setmetatable(L, -2);
}
