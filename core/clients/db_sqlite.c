/* SQLite for moonlet.db: a driver under the pool core (see db.h).
 *
 * Statements run on libuv's threadpool (uv_queue_work), never on the loop. A connection
 * serves at once: it opens its database lazily, on the threadpool, with the first job it
 * runs, in WAL mode with a busy timeout. :memory: (or "") gets one connection, since each
 * would be its own database. db_sqlite_open runs that first open at once, so a bad path
 * fails there.
 *
 * Ownership: a job's results are written on the threadpool while it runs and read on the
 * loop after (uv_queue_work orders the two). conn->sqlite is set on the threadpool under
 * conn->lock, which the loop takes to interrupt a running statement; the loop reads it
 * without the lock only while no job runs. */
#include "db_sqlite.h"
#include "core.h"
#include "copy.h"
#include "mem.h"
#include "buf.h"
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUSY_TIMEOUT_MS 5000

typedef struct {
  ml_db_conn_t base;
  sqlite3 *sqlite;           /* NULL until a job opens it (on a threadpool thread) */
  uv_mutex_t lock;           /* sqlite: set on the threadpool, read to interrupt */
} conn_t;

typedef struct {
  ml_db_job_t base;
  uv_work_t req;
  int status;                /* uv's: UV_ECANCELED when it never ran */
  /* results, written on the threadpool */
  ml_buf_t out;              /* rows: put_columns, put_row */
  char *err;
  int64_t changes, last_id;
  int has_id;
} job_t;

static int is_memory(const char *path) { return strcmp(path, ":memory:") == 0 || !*path; }

/* --- the threadpool side --------------------------------------------------------------- */

static void set_err(job_t *j, const char *what, sqlite3 *db) {
  const char *msg = db ? sqlite3_errmsg(db) : "out of memory";
  if (db && sqlite3_errcode(db) == SQLITE_INTERRUPT) msg = "interrupted";
  size_t n = strlen(what) + strlen(msg) + 3;
  j->err = ml_xmalloc(n);
  snprintf(j->err, n, "%s%s", what, msg);
}

/* A row: 'R', then its cells as packed values (copy.h); SQLite's integers arrive as Lua
 * numbers either way. */
static void put_row(ml_buf_t *b, sqlite3_stmt *st, int ncols) {
  ml_buf_addc(b, 'R');
  for (int i = 0; i < ncols; i++) {
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL: ml_copy_put_null(b); break;
    case SQLITE_INTEGER: ml_copy_put_num(b, (double)sqlite3_column_int64(st, i)); break;
    case SQLITE_FLOAT: ml_copy_put_num(b, sqlite3_column_double(st, i)); break;
    default:   /* TEXT, BLOB: a Lua string either way */
      ml_copy_put_str(b, sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
    }
  }
}

/* The columns of the rows that follow: 'C', their count, then their names (packed). */
static void put_columns(ml_buf_t *b, sqlite3_stmt *st, int ncols) {
  ml_buf_addc(b, 'C');
  ml_copy_put_num(b, ncols);
  for (int i = 0; i < ncols; i++) {
    const char *name = sqlite3_column_name(st, i);
    ml_copy_put_str(b, name, strlen(name));
  }
}

static int bind_params(job_t *j, sqlite3_stmt *st) {
  for (int k = 0; k < j->base.nparams; k++) {
    ml_db_value_t *v = &j->base.params[k];
    int rc;
    switch (v->type) {
    case ML_DB_VALUE_INT: case ML_DB_VALUE_BOOL: rc = sqlite3_bind_int64(st, k + 1, v->i); break;
    case ML_DB_VALUE_FLOAT: rc = sqlite3_bind_double(st, k + 1, v->d); break;
    case ML_DB_VALUE_TEXT:
      rc = sqlite3_bind_text(st, k + 1, v->s, (int)v->len, SQLITE_STATIC);
      break;
    default: rc = sqlite3_bind_null(st, k + 1);
    }
    if (rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

/* Runs every statement of the job's SQL on db; parameters bind to the first one. Rows go
 * to j->out (query), a RETURNING id to j->last_id (exec). Returns 0, or -1 with j->err set. */
static int run_statements(job_t *j, sqlite3 *db) {
  const char *sql = j->base.sql;
  int first = 1;
  while (*sql) {
    sqlite3_stmt *st;
    const char *tail;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) {
      set_err(j, "", db);
      return -1;
    }
    sql = tail;
    if (!st) continue;   /* only whitespace or a comment */
    int want = sqlite3_bind_parameter_count(st), have = first ? j->base.nparams : 0;
    if (want != have) {
      char msg[96];
      snprintf(msg, sizeof msg, first ? "expected %d parameter(s), got %d"
                                      : "parameters bind to the first statement only (%d/%d)",
               want, have);
      j->err = ml_xstrdup(msg);
      sqlite3_finalize(st);
      return -1;
    }
    if (first && bind_params(j, st) != SQLITE_OK) {
      set_err(j, "", db);
      sqlite3_finalize(st);
      return -1;
    }
    first = 0;
    int ncols = sqlite3_column_count(st), rc, header = 0, id_col = -1;
    if (j->base.mode == ML_DB_EXEC)
      for (int i = 0; i < ncols; i++)
        if (sqlite3_stricmp(sqlite3_column_name(st, i), "id") == 0) id_col = i;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (j->base.mode == ML_DB_EXEC) {
        if (id_col >= 0 && !j->has_id) {   /* RETURNING id */
          j->has_id = 1;
          j->last_id = sqlite3_column_int64(st, id_col);
        }
        continue;
      }
      if (!header) {
        header = 1;
        put_columns(&j->out, st, ncols);
      }
      put_row(&j->out, st, ncols);
    }
    if (rc != SQLITE_DONE) {
      set_err(j, "", db);
      sqlite3_finalize(st);
      return -1;
    }
    sqlite3_finalize(st);
  }
  return 0;
}

/* Watches one run_sql for a row inserted under the rowid the connection reported before
 * (the newest row was deleted, or an insert rolled back): the last insert rowid then does
 * not change, yet a row went in. */
typedef struct {
  sqlite3_int64 rowid0;
  int reinserted;
} insert_watch_t;

static void insert_watch_cb(void *ud, int op, const char *dbname, const char *table,
                            sqlite3_int64 rowid) {
  insert_watch_t *w = ud;
  (void)dbname;
  (void)table;
  if (op == SQLITE_INSERT && rowid == w->rowid0) w->reinserted = 1;
}

/* run_statements, then the counts of an exec: j->changes, and j->last_id (SQLite's last
 * insert rowid) when a statement inserted a row and no RETURNING id gave one. A row that a
 * trigger inserted under the old rowid also counts (the update hook cannot tell them
 * apart). */
static void run_sql(job_t *j, sqlite3 *db) {
  insert_watch_t w = { sqlite3_last_insert_rowid(db), 0 };
  int64_t total0 = sqlite3_total_changes(db);
  sqlite3_update_hook(db, insert_watch_cb, &w);
  int rc = run_statements(j, db);
  sqlite3_update_hook(db, NULL, NULL);
  if (rc < 0) return;
  j->changes = sqlite3_total_changes(db) - total0;
  int64_t rowid = sqlite3_last_insert_rowid(db);
  if (!j->has_id && (rowid != w.rowid0 || w.reinserted)) {
    j->has_id = 1;
    j->last_id = rowid;
  }
}

static void open_conn(job_t *j, conn_t *c) {
  const char *path = j->base.db->target;
  sqlite3 *db = NULL;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
    char what[300];
    snprintf(what, sizeof what, "cannot open %s: ", path);
    set_err(j, what, db);
    sqlite3_close(db);
    return;
  }
  sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
  if (!is_memory(path) &&
      sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, NULL)) {
    set_err(j, "cannot set WAL mode: ", db);
    sqlite3_close(db);
    return;
  }
  uv_mutex_lock(&c->lock);
  c->sqlite = db;
  uv_mutex_unlock(&c->lock);
}

/* Opens the connection if it is not yet, then runs the job: a statement, or a ROLLBACK
 * when a transaction is open (db.c finds that out on the loop with drv_txn). */
static void work_cb(uv_work_t *req) {
  job_t *j = req->data;
  conn_t *c = (conn_t *)j->base.conn;
  if (!c->sqlite) open_conn(j, c);
  if (!c->sqlite) return;
  if (j->base.kind == ML_DB_RUN) run_sql(j, c->sqlite);
  else if (j->base.kind == ML_DB_ROLLBACK && !sqlite3_get_autocommit(c->sqlite))
    sqlite3_exec(c->sqlite, "ROLLBACK", NULL, NULL, NULL);
}

/* --- the loop side --------------------------------------------------------------------- */

static void after_cb(uv_work_t *req, int status) {
  job_t *j = req->data;
  j->status = status;
  ml_db_job_done(j->base.conn);
}

/* Pushes the rows encoded in b (put_columns, put_row) as an array of { column = value }
 * tables. The buffer is the threadpool's own output: it is never corrupt. */
static void push_rows(lua_State *L, const ml_buf_t *b) {
  ml_copy_reader_t r = {b->data, b->data + b->len};
  int nrows = 0, ncols = 0;
  ml_db_value_push_rows(L, 0);
  lua_newtable(L);   /* column names */
  while (r.p < r.end) {
    if (*r.p++ == 'C') {
      ml_copy_next(L, &r);
      ncols = (int)lua_tonumber(L, -1);
      lua_pop(L, 1);
      for (int i = 1; i <= ncols; i++) {
        ml_copy_next(L, &r);
        lua_rawseti(L, -2, i);
      }
      continue;
    }
    lua_createtable(L, 0, ncols);
    for (int i = 1; i <= ncols; i++) {
      lua_rawgeti(L, -2, i);
      ml_copy_next(L, &r);
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -3, ++nrows);
  }
  lua_pop(L, 1);
}

/* --- the driver (db.h) ----------------------------------------------------------------- */

static int drv_init(ml_db_t *db, char *err) {
  (void)err;
  if (is_memory(db->target)) db->size = 1;
  return 0;
}

static int drv_connect(ml_db_conn_t *b, char *err) {
  int rc = uv_mutex_init(&((conn_t *)b)->lock);
  if (rc) snprintf(err, ML_DB_ERRLEN, "%s", uv_strerror(rc));
  return rc ? -1 : 1;   /* ready: it opens with its first job */
}

static void drv_disconnect(ml_db_conn_t *b) {
  conn_t *c = (conn_t *)b;
  if (c->sqlite) sqlite3_close_v2(c->sqlite);   /* rolls back an open transaction */
  uv_mutex_destroy(&c->lock);
}

static int drv_txn(ml_db_conn_t *b) {
  sqlite3 *db = ((conn_t *)b)->sqlite;
  return db && !sqlite3_get_autocommit(db) ? ML_DB_TX_OPEN : ML_DB_TX_NONE;
}

static int drv_send(ml_db_conn_t *c, ml_db_job_t *b, char *err) {
  job_t *j = (job_t *)b;
  j->req.data = j;
  int rc = uv_queue_work(c->db->loop, &j->req, work_cb, after_cb);
  if (rc) snprintf(err, ML_DB_ERRLEN, "%s", uv_strerror(rc));
  return rc ? -1 : 0;
}

/* A job still queued never runs (after_cb sees UV_ECANCELED); a running statement is
 * interrupted. */
static void drv_cancel(ml_db_conn_t *b, ml_db_job_t *j) {
  conn_t *c = (conn_t *)b;
  if (uv_cancel((uv_req_t *)&((job_t *)j)->req) == 0) return;
  uv_mutex_lock(&c->lock);
  if (c->sqlite) sqlite3_interrupt(c->sqlite);
  uv_mutex_unlock(&c->lock);
}

static int drv_push(lua_State *L, ml_db_job_t *b) {
  job_t *j = (job_t *)b;
  if (j->status != 0 || j->err) {
    lua_pushnil(L);
    lua_pushstring(L, j->status != 0 ? "cancelled" : j->err);
    return 2;
  }
  if (b->kind == ML_DB_OPEN) return 0;
  if (b->mode == ML_DB_QUERY) push_rows(L, &j->out);
  else ml_db_value_push_changes(L, j->changes, j->has_id, j->last_id);
  return 1;
}

static void drv_job_free(ml_db_job_t *b) {
  job_t *j = (job_t *)b;
  free(j->err);
  ml_buf_free(&j->out);
}

const ml_db_driver_t ml_db_sqlite_driver = {
  .open_name = "db_sqlite_open", .handle_mt = "moonlet.db.sqlite",
  .lease_mt = "moonlet.db.sqlite.lease",
  .default_size = 4, .max_size = 64, .open_connects = 1,   /* a bad path fails at open */
  .conn_size = sizeof(conn_t), .job_size = sizeof(job_t),
  .init = drv_init, .connect = drv_connect, .disconnect = drv_disconnect, .txn = drv_txn,
  .send = drv_send, .cancel = drv_cancel, .push = drv_push, .job_free = drv_job_free,
};

void ml_db_sqlite_open(lua_State *L) {
  ml_db_install(L, &ml_db_sqlite_driver);
}
