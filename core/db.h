/* Databases: what the SQLite (db_sqlite.c) and PostgreSQL (db_pg.c) drivers share.
 *
 * Both drivers give Lua the same handle (see lua/moonlet/db.lua, which wraps it):
 *   h:run(lease|nil, mode, sql, ...) -> rows | { changes, last_id } | nil, err
 *   h:acquire() -> lease | nil, err          (a connection pinned for a transaction)
 *   lease:release(clean)                     (clean: the transaction was ended by SQL)
 *   h:close()
 * run and acquire wait through the task API (task.h): they yield in a coroutine and block
 * elsewhere. Parameters are copied into C values (ml_db_val_t) before anything waits, so
 * a statement owns what it binds whatever happens to the Lua stack meanwhile. */
#ifndef ML_DB_H
#define ML_DB_H
#include <lua.h>
#include <stddef.h>
#include <stdint.h>

enum { ML_DB_NULL, ML_DB_INT, ML_DB_FLOAT, ML_DB_TEXT, ML_DB_BOOL };
enum { ML_DB_QUERY, ML_DB_EXEC };

typedef struct {
  int type;
  int64_t i;                 /* INT, BOOL */
  double d;                  /* FLOAT */
  char *s;                   /* TEXT: malloc'd, NUL-terminated, len bytes */
  size_t len;
} ml_db_val_t;

/* Copies the values at L[first..top] into a new array (*n of them; NULL when none).
 * nil and moonlet.null bind NULL; integral numbers bind as integers. Raises on any other
 * type, before allocating anything. The caller frees with ml_db_params_free. */
ml_db_val_t *ml_db_params(lua_State *L, int first, int *n);
void ml_db_params_free(ml_db_val_t *v, int n);

/* Pushes the {changes = n, last_id = id|nil} table of an exec. */
void ml_db_push_exec(lua_State *L, int64_t changes, int has_id, int64_t last_id);
/* Pushes an empty row list carrying the JSON array metatable (so [] encodes as []). */
void ml_db_push_rows(lua_State *L, int nrows);
/* Checks that the Lua argument at idx is the SQL text; raises otherwise. */
const char *ml_db_checksql(lua_State *L, int idx, size_t *len);

/* What a driver gives Lua: a handle type (run, acquire, close; __gc closes) and a lease
 * type for a pinned connection (release; __gc releases), and its open function. */
typedef struct {
  const char *handle_mt, *lease_mt, *open_name;
  lua_CFunction open, run, acquire, close, release, lease_gc;
} ml_db_driver_t;

/* Registers a driver's metatables and installs its open function into the table on top
 * of the stack. */
void ml_db_register(lua_State *L, const ml_db_driver_t *d);

/* Installs db_sqlite_open and db_pg_open into the table on top of the stack. */
void ml_db_open(lua_State *L);
void ml_db_sqlite_open(lua_State *L);
void ml_db_pg_open(lua_State *L);
#endif
