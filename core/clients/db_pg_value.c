/* PostgreSQL values (see db_pg_value.h): parameters out as text, results in by type OID. */
#include "db_pg_value.h"
#include "mem.h"
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char **ml_db_pg_value_params(ml_db_value_t *v, int n) {
  if (n == 0) return NULL;
  char **out = ml_xcalloc((size_t)n, sizeof *out);
  for (int i = 0; i < n; i++) {
    char buf[64];
    switch (v[i].type) {
    case ML_DB_VALUE_NULL: continue;
    case ML_DB_VALUE_TEXT: out[i] = v[i].s; v[i].s = NULL; continue;
    case ML_DB_VALUE_BOOL: snprintf(buf, sizeof buf, "%s", v[i].i ? "t" : "f"); break;
    case ML_DB_VALUE_INT: snprintf(buf, sizeof buf, "%lld", (long long)v[i].i); break;
    default:
      if (isnan(v[i].d)) snprintf(buf, sizeof buf, "NaN");
      else if (isinf(v[i].d))
        snprintf(buf, sizeof buf, "%sInfinity", v[i].d < 0 ? "-" : "");
      else snprintf(buf, sizeof buf, "%.17g", v[i].d);
    }
    out[i] = ml_xstrdup(buf);
  }
  return out;
}

static void push_value(lua_State *L, PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col)) {
    lua_pushlightuserdata(L, NULL);   /* moonlet.null */
    return;
  }
  const char *v = PQgetvalue(r, row, col);
  switch (PQftype(r, col)) {
  case 16: lua_pushboolean(L, v[0] == 't'); break;                       /* bool */
  case 20: case 21: case 23: case 26:                                     /* int8/2/4, oid */
  case 700: case 701: case 1700: lua_pushnumber(L, strtod(v, NULL)); break;   /* floats, numeric */
  default: lua_pushlstring(L, v, (size_t)PQgetlength(r, row, col));
  }
}

void ml_db_pg_value_push_changes(lua_State *L, PGresult *r) {
  int id = PQntuples(r) > 0 ? PQfnumber(r, "id") : -1;
  int has_id = id >= 0 && !PQgetisnull(r, 0, id);
  ml_db_value_push_changes(L, strtoll(PQcmdTuples(r), NULL, 10), has_id,
                           has_id ? strtoll(PQgetvalue(r, 0, id), NULL, 10) : 0);
}

void ml_db_pg_value_push_rows(lua_State *L, PGresult *r) {
  int nrows = PQntuples(r), ncols = PQnfields(r);
  ml_db_value_push_rows(L, nrows);
  for (int i = 0; i < nrows; i++) {
    lua_createtable(L, 0, ncols);
    for (int k = 0; k < ncols; k++) {
      lua_pushstring(L, PQfname(r, k));
      push_value(L, r, i, k);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -2, i + 1);
  }
}
