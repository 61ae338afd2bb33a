/* PostgreSQL values for db_pg.c: moonlet's parameters as libpq text parameters, and
 * results as Lua values chosen by column type (int2/4/8, oid, float4/8, numeric ->
 * number; bool -> boolean; NULL -> moonlet.null; anything else -> its text). */
#ifndef ML_DB_PG_VALUE_H
#define ML_DB_PG_VALUE_H
#include "db_value.h"
#include <libpq-fe.h>
#include <lua.h>

/* n text values for PQsendQueryParams (NULL for SQL NULL; the server infers types from
 * the statement). Takes the TEXT strings out of v; the caller frees each value and the
 * array. NULL when n is 0. */
char **ml_db_pg_value_params(ml_db_value_t *v, int n);
/* Pushes r as a list of rows ({ column = value }). */
void ml_db_pg_value_push_rows(lua_State *L, PGresult *r);
/* Pushes r as { changes, last_id }: last_id is the first row's "id" column, as RETURNING id
 * gives it. */
void ml_db_pg_value_push_changes(lua_State *L, PGresult *r);
#endif
