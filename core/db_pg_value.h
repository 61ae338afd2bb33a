/* PostgreSQL values for db_pg.c: moonlet's parameters as libpq text parameters, and
 * results as Lua values chosen by column type (int2/4/8, oid, float4/8, numeric ->
 * number; bool -> boolean; NULL -> moonlet.null; anything else -> its text). */
#ifndef ML_DB_PG_VALUE_H
#define ML_DB_PG_VALUE_H
#include "db.h"
#include <libpq-fe.h>
#include <lua.h>

/* n text values for PQsendQueryParams (NULL for SQL NULL; the server infers types from
 * the statement). Takes the TEXT strings out of v; the caller frees each value and the
 * array. NULL when n is 0. */
char **ml_pg_text_params(ml_db_val_t *v, int n);
/* Pushes r as rows (ML_DB_QUERY) or as { changes, last_id } (ML_DB_EXEC: last_id is the
 * first row's "id" column, as RETURNING id gives it). */
void ml_pg_push_result(lua_State *L, PGresult *r, int mode);
#endif
