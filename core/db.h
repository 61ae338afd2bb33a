/* Databases: what the SQLite (db_sqlite.c) and PostgreSQL (db_pg.c) drivers share.
 *
 * Both drivers give Lua the same handle (see lua/moonlet/db.lua, which wraps it):
 *   h:run(lease|nil, mode, sql, ...) -> rows | { changes, last_id } | nil, err
 *   h:acquire() -> lease | nil, err          (a connection pinned for a transaction)
 *   lease:release(clean)                     (clean: the transaction was ended by SQL)
 *   h:close()
 * run and acquire wait through the task API (task.h): they yield in a coroutine and block
 * elsewhere. Parameters are copied into C values (db_value.h) before anything waits. */
#ifndef ML_DB_H
#define ML_DB_H
#include "db_value.h"
#include <lua.h>
#include <stddef.h>

enum { ML_DB_QUERY, ML_DB_EXEC };

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
