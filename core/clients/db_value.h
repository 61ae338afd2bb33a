/* Values between Lua and the database drivers: statement parameters copied out of Lua
 * into C values before anything waits (so a statement owns what it binds, whatever happens
 * to the Lua stack meanwhile), and the two shapes of results. */
#ifndef ML_DB_VALUE_H
#define ML_DB_VALUE_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

enum { ML_DB_VALUE_NULL, ML_DB_VALUE_INT, ML_DB_VALUE_FLOAT, ML_DB_VALUE_TEXT, ML_DB_VALUE_BOOL };

typedef struct {
  int type;
  int64_t i;                 /* INT, BOOL */
  double d;                  /* FLOAT */
  char *s;                   /* TEXT: malloc'd, NUL-terminated, len bytes */
  size_t len;
} ml_db_value_t;

/* Copies the values at L[first..top] into a new array (*n of them; NULL when none).
 * nil and moonlet.null bind NULL; integral numbers bind as integers. Raises on any other
 * type, before allocating anything. The caller frees with ml_db_value_free. */
ml_db_value_t *ml_db_value_params(lua_State *L, int first, int *n);
void ml_db_value_free(ml_db_value_t *v, int n);

/* Pushes the {changes = n, last_id = id|nil} table of an exec. */
void ml_db_value_push_changes(lua_State *L, int64_t changes, int has_id, int64_t last_id);
/* Pushes an empty row list carrying the JSON array metatable (so [] encodes as []). */
void ml_db_value_push_rows(lua_State *L, int nrows);
#endif
