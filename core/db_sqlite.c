/* SQLite for moonlet.db (see db.h for the handle's Lua face).
 *
 * Statements run on libuv's threadpool (uv_queue_work), never on the loop. A handle owns
 * a small set of connections (one for :memory:, where each connection would be its own
 * database); a connection serves one job at a time, and jobs that find none free wait
 * in a FIFO. Connections open lazily, on the threadpool, in WAL mode with a busy
 * timeout. A transaction leases one connection until it ends.
 *
 * Ownership: a job belongs to the FIFO, then to the threadpool, then to after_cb, which
 * frees it. Jobs and leases hold references on the handle, so the handle's C memory
 * outlives its Lua userdata when work is still in flight. Cancelling a running job
 * clears job->task (its result is discarded) and interrupts the statement. */
#include "db.h"
#include "task.h"
#include "buf.h"
#include <assert.h>
#include <lauxlib.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HANDLE_MT "moonlet.db.sqlite"
#define LEASE_MT "moonlet.db.sqlite.lease"
#define BUSY_TIMEOUT_MS 5000
#define DEFAULT_CONNS 4

typedef struct lease_s lease_t;
typedef struct job_s job_t;

typedef struct {
  sqlite3 *db;               /* NULL until a job opens it (on a threadpool thread) */
  int busy;                  /* a job holds it */
  lease_t *lease;            /* pinned by a transaction */
  int dirty;                 /* released mid-transaction: roll back before reuse */
} conn_t;

typedef struct {
  uv_loop_t *loop;
  char *path;
  int memory;
  int size;
  conn_t *conns;             /* size slots */
  job_t *head, *tail;        /* waiting for a connection */
  int refs;                  /* the Lua userdata, jobs, leases */
  int closed;
  uv_mutex_t lock;           /* conn->db: set by threadpool threads, read to interrupt */
} handle_t;

struct lease_s {             /* Lua userdata */
  handle_t *h;
  conn_t *c;                 /* NULL once released */
};

enum { J_OPEN, J_RUN, J_ACQUIRE, J_ROLLBACK };

struct job_s {
  uv_work_t req;
  handle_t *h;
  conn_t *c;                 /* NULL while in the FIFO */
  ml_task_t *task;           /* NULL when nobody waits (cancelled, internal) */
  int kind, mode;
  int in_tx;                 /* runs under a transaction's lease */
  char *sql;
  ml_db_value_t *params;
  int nparams;
  int ud_ref;                /* J_OPEN: the handle's userdata, pushed on success */
  /* results, written on the threadpool */
  ml_buf_t out;              /* 'C' ncols names... | 'R' cells... */
  char *err;
  int64_t changes, last_id;
  int has_id;
  job_t *next, *prev;
};

static void conn_available(handle_t *h, conn_t *c);

static void handle_unref(handle_t *h) {
  if (--h->refs > 0) return;
  assert(h->closed);
  uv_mutex_destroy(&h->lock);
  free(h->conns);
  free(h->path);
  free(h);
}

static void conn_close(handle_t *h, conn_t *c) {
  if (!c->db) return;
  uv_mutex_lock(&h->lock);
  sqlite3 *db = c->db;
  c->db = NULL;
  uv_mutex_unlock(&h->lock);
  sqlite3_close_v2(db);   /* rolls back an open transaction */
}

static job_t *job_new(handle_t *h, int kind) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->h = h;
  j->kind = kind;
  j->ud_ref = LUA_NOREF;
  j->req.data = j;
  h->refs++;
  return j;
}

static void job_free(job_t *j) {
  ml_db_value_free(j->params, j->nparams);
  free(j->sql);
  free(j->err);
  ml_buf_free(&j->out);
  handle_t *h = j->h;
  free(j);
  handle_unref(h);
}

static void fifo_push(handle_t *h, job_t *j) {
  j->prev = h->tail;
  j->next = NULL;
  if (h->tail) h->tail->next = j; else h->head = j;
  h->tail = j;
}

static void fifo_unlink(handle_t *h, job_t *j) {
  if (j->prev) j->prev->next = j->next; else h->head = j->next;
  if (j->next) j->next->prev = j->prev; else h->tail = j->prev;
  j->next = j->prev = NULL;
}

/* --- the threadpool side --------------------------------------------------------------- */

static void set_err(job_t *j, const char *what, sqlite3 *db) {
  const char *msg = db ? sqlite3_errmsg(db) : "out of memory";
  if (db && sqlite3_errcode(db) == SQLITE_INTERRUPT) msg = "interrupted";
  size_t n = strlen(what) + strlen(msg) + 3;
  j->err = malloc(n);
  if (!j->err) abort();
  snprintf(j->err, n, "%s%s", what, msg);
}

static void put_u32(ml_buf_t *b, uint32_t v) { ml_buf_add(b, &v, 4); }

static void put_row(ml_buf_t *b, sqlite3_stmt *st, int ncols) {
  ml_buf_addc(b, 'R');
  for (int i = 0; i < ncols; i++) {
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL: ml_buf_addc(b, 'n'); break;
    case SQLITE_INTEGER: {
      int64_t v = sqlite3_column_int64(st, i);
      ml_buf_addc(b, 'i');
      ml_buf_add(b, &v, 8);
      break;
    }
    case SQLITE_FLOAT: {
      double d = sqlite3_column_double(st, i);
      ml_buf_addc(b, 'f');
      ml_buf_add(b, &d, 8);
      break;
    }
    default: {   /* TEXT, BLOB: a Lua string either way */
      const void *p = sqlite3_column_blob(st, i);
      uint32_t len = (uint32_t)sqlite3_column_bytes(st, i);
      ml_buf_addc(b, 's');
      put_u32(b, len);
      ml_buf_add(b, p, len);
    }
    }
  }
}

static int bind_params(job_t *j, sqlite3_stmt *st) {
  for (int k = 0; k < j->nparams; k++) {
    ml_db_value_t *v = &j->params[k];
    int rc;
    switch (v->type) {
    case ML_DB_VALUE_INT: case ML_DB_VALUE_BOOL: rc = sqlite3_bind_int64(st, k + 1, v->i); break;
    case ML_DB_VALUE_FLOAT: rc = sqlite3_bind_double(st, k + 1, v->d); break;
    case ML_DB_VALUE_TEXT: rc = sqlite3_bind_text(st, k + 1, v->s, (int)v->len, SQLITE_STATIC); break;
    default: rc = sqlite3_bind_null(st, k + 1);
    }
    if (rc != SQLITE_OK) return rc;
  }
  return SQLITE_OK;
}

/* Runs every statement of j->sql on db; parameters bind to the first one. Rows go to
 * j->out (query), counts to j->changes / j->last_id (exec), failures to j->err. */
static void run_sql(job_t *j, sqlite3 *db) {
  const char *sql = j->sql;
  int64_t rowid0 = sqlite3_last_insert_rowid(db);
  int64_t total0 = sqlite3_total_changes(db);
  int first = 1;
  while (*sql) {
    sqlite3_stmt *st;
    const char *tail;
    if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK) {
      set_err(j, "", db);
      return;
    }
    sql = tail;
    if (!st) continue;   /* only whitespace or a comment */
    int want = sqlite3_bind_parameter_count(st), have = first ? j->nparams : 0;
    if (want != have) {
      char msg[96];
      snprintf(msg, sizeof msg, first ? "expected %d parameter(s), got %d"
                                      : "parameters bind to the first statement only (%d/%d)",
               want, have);
      j->err = strdup(msg);
      sqlite3_finalize(st);
      return;
    }
    if (first && bind_params(j, st) != SQLITE_OK) {
      set_err(j, "", db);
      sqlite3_finalize(st);
      return;
    }
    first = 0;
    int ncols = sqlite3_column_count(st), rc, header = 0, id_col = -1;
    if (j->mode == ML_DB_EXEC)
      for (int i = 0; i < ncols; i++)
        if (sqlite3_stricmp(sqlite3_column_name(st, i), "id") == 0) id_col = i;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (j->mode == ML_DB_EXEC) {
        if (id_col >= 0 && !j->has_id) {   /* RETURNING id */
          j->has_id = 1;
          j->last_id = sqlite3_column_int64(st, id_col);
        }
        continue;
      }
      if (!header) {
        header = 1;
        ml_buf_addc(&j->out, 'C');
        put_u32(&j->out, (uint32_t)ncols);
        for (int i = 0; i < ncols; i++) {
          const char *name = sqlite3_column_name(st, i);
          put_u32(&j->out, (uint32_t)strlen(name));
          ml_buf_addstr(&j->out, name);
        }
      }
      put_row(&j->out, st, ncols);
    }
    if (rc != SQLITE_DONE) {
      set_err(j, "", db);
      sqlite3_finalize(st);
      return;
    }
    sqlite3_finalize(st);
  }
  j->changes = sqlite3_total_changes(db) - total0;
  int64_t rowid = sqlite3_last_insert_rowid(db);
  if (!j->has_id && rowid != rowid0) {
    j->has_id = 1;
    j->last_id = rowid;
  }
}

static void open_conn(job_t *j, conn_t *c) {
  handle_t *h = j->h;
  sqlite3 *db = NULL;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (sqlite3_open_v2(h->path, &db, flags, NULL) != SQLITE_OK) {
    char what[300];
    snprintf(what, sizeof what, "cannot open %s: ", h->path);
    set_err(j, what, db);
    sqlite3_close(db);
    return;
  }
  sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
  if (!h->memory &&
      sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, NULL)) {
    set_err(j, "cannot set WAL mode: ", db);
    sqlite3_close(db);
    return;
  }
  uv_mutex_lock(&h->lock);
  c->db = db;
  uv_mutex_unlock(&h->lock);
}

static void work_cb(uv_work_t *req) {
  job_t *j = req->data;
  conn_t *c = j->c;
  if (!c->db) open_conn(j, c);
  if (!c->db) return;
  if (j->kind == J_RUN) {
    run_sql(j, c->db);
    /* outside db:transaction, nothing may leave a transaction open on a pooled
     * connection (a script stopped by an error before its COMMIT, an interrupt) */
    if (!j->in_tx && !sqlite3_get_autocommit(c->db))
      sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  } else if (j->kind == J_ROLLBACK && !sqlite3_get_autocommit(c->db))
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

/* --- the loop side --------------------------------------------------------------------- */

/* Pushes the rows encoded in b as an array of { column = value } tables. */
static void push_rows(lua_State *L, const ml_buf_t *b) {
  const char *p = b->data, *end = p + b->len;
  int nrows = 0, ncols = 0;
  ml_db_value_push_rows(L, 0);
  lua_newtable(L);   /* column names */
  while (p < end) {
    uint32_t u;
    if (*p++ == 'C') {
      memcpy(&u, p, 4);
      p += 4;
      ncols = (int)u;
      for (int i = 1; i <= ncols; i++) {
        memcpy(&u, p, 4);
        lua_pushlstring(L, p + 4, u);
        lua_rawseti(L, -2, i);
        p += 4 + u;
      }
      continue;
    }
    lua_createtable(L, 0, ncols);
    for (int i = 1; i <= ncols; i++) {
      lua_rawgeti(L, -2, i);
      char tag = *p++;
      if (tag == 'n') {
        lua_pushlightuserdata(L, NULL);   /* moonlet.null */
      } else if (tag == 'i') {
        int64_t v;
        memcpy(&v, p, 8);
        p += 8;
        lua_pushnumber(L, (lua_Number)v);
      } else if (tag == 'f') {
        double d;
        memcpy(&d, p, 8);
        p += 8;
        lua_pushnumber(L, d);
      } else {
        memcpy(&u, p, 4);
        lua_pushlstring(L, p + 4, u);
        p += 4 + u;
      }
      lua_rawset(L, -3);
    }
    lua_rawseti(L, -3, ++nrows);
  }
  lua_pop(L, 1);
}

static void push_lease(lua_State *L, handle_t *h, conn_t *c) {
  lease_t *l = lua_newuserdata(L, sizeof *l);
  l->h = h;
  l->c = c;
  c->lease = l;
  h->refs++;
  luaL_getmetatable(L, LEASE_MT);
  lua_setmetatable(L, -2);
}

static void after_cb(uv_work_t *req, int status) {
  job_t *j = req->data;
  handle_t *h = j->h;
  conn_t *c = j->c;
  ml_task_t *t = j->task;
  c->busy = 0;
  if (!t && c->lease && j->kind == J_RUN) {   /* cancelled inside a transaction */
    c->lease->c = NULL;
    c->lease = NULL;
    c->dirty = 1;
  }
  int n = 0;
  if (t) {
    lua_State *L = t->co;
    if (status != 0 || j->err) {
      lua_pushnil(L);
      lua_pushstring(L, status != 0 ? "cancelled" : j->err);
      n = 2;
    } else if (j->kind == J_OPEN) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, j->ud_ref);
      n = 1;
    } else if (j->mode == ML_DB_QUERY) {
      push_rows(L, &j->out);
      n = 1;
    } else {
      ml_db_value_push_changes(L, j->changes, j->has_id, j->last_id);
      n = 1;
    }
    if (j->ud_ref != LUA_NOREF) luaL_unref(t->sched->L, LUA_REGISTRYINDEX, j->ud_ref);
  }
  h->refs++;   /* past job_free and the wake */
  job_free(j);
  if (t) ml_task_wake(t, n);
  if (!c->busy && !c->lease) conn_available(h, c);
  handle_unref(h);
}

static void job_start(job_t *j, conn_t *c) {
  assert(!c->busy);
  c->busy = 1;
  j->c = c;
  uv_queue_work(j->h->loop, &j->req, work_cb, after_cb);
}

/* c has no job and no lease: roll it back if it must, else give it to the first waiter. */
static void conn_available(handle_t *h, conn_t *c) {
  if (h->closed) {
    conn_close(h, c);
    return;
  }
  if (c->dirty) {
    c->dirty = 0;
    job_start(job_new(h, J_ROLLBACK), c);
    return;
  }
  job_t *j = h->head;
  if (!j) return;
  fifo_unlink(h, j);
  if (j->kind != J_ACQUIRE) {
    job_start(j, c);
    return;
  }
  ml_task_t *t = j->task;
  push_lease(t->co, h, c);
  job_free(j);
  ml_task_wake(t, 1);
}

/* A free connection for a new job, preferring open ones; NULL when jobs already wait
 * (they go first) or none is free. */
static conn_t *conn_idle(handle_t *h) {
  if (h->head) return NULL;
  conn_t *fresh = NULL;
  for (int i = 0; i < h->size; i++) {
    conn_t *c = &h->conns[i];
    if (c->busy || c->lease) continue;
    if (c->db) return c;
    if (!fresh) fresh = c;
  }
  return fresh;
}

static void job_cancel(ml_task_t *t) {
  job_t *j = t->wait;
  j->task = NULL;
  if (j->ud_ref != LUA_NOREF) {
    luaL_unref(t->sched->L, LUA_REGISTRYINDEX, j->ud_ref);
    j->ud_ref = LUA_NOREF;
  }
  if (!j->c) {   /* still waiting for a connection */
    fifo_unlink(j->h, j);
    job_free(j);
    return;
  }
  if (uv_cancel((uv_req_t *)&j->req) == 0) return;   /* after_cb sees UV_ECANCELED */
  uv_mutex_lock(&j->h->lock);
  if (j->c->db) sqlite3_interrupt(j->c->db);   /* after_cb discards what it finished */
  uv_mutex_unlock(&j->h->lock);
}

static void handle_close(handle_t *h) {
  if (h->closed) return;
  h->closed = 1;
  while (h->head) {   /* waiters: woken with an error */
    job_t *j = h->head;
    fifo_unlink(h, j);
    ml_task_t *t = j->task;
    lua_pushnil(t->co);
    lua_pushstring(t->co, "closed");
    job_free(j);
    ml_task_wake(t, 2);
  }
  for (int i = 0; i < h->size; i++) {
    conn_t *c = &h->conns[i];
    if (c->lease) {
      c->lease->c = NULL;
      c->lease = NULL;
    }
    if (!c->busy) conn_close(h, c);   /* busy ones close when their job ends */
  }
}

/* --- Lua ------------------------------------------------------------------------------- */

static handle_t *check_handle(lua_State *L) {
  handle_t **ud = luaL_checkudata(L, 1, HANDLE_MT);
  if (!*ud) luaL_error(L, "the database handle is closed");
  return *ud;
}

/* db_sqlite_open(path, connections) -> handle | nil, err. Opens the first connection (on
 * the threadpool) so a bad path fails here. */
static int l_open(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int size = (int)luaL_optinteger(L, 2, DEFAULT_CONNS);
  luaL_argcheck(L, size >= 1 && size <= 64, 2, "expected 1 to 64 connections");
  int memory = strcmp(path, ":memory:") == 0 || len == 0;
  ml_task_t *t = ml_task_current(L);
  handle_t *h = calloc(1, sizeof *h);
  if (!h) abort();
  h->loop = t->sched->loop;
  h->path = strdup(path);
  h->memory = memory;
  h->size = memory ? 1 : size;
  h->conns = calloc((size_t)h->size, sizeof *h->conns);
  if (!h->conns || !h->path) abort();
  h->refs = 1;
  uv_mutex_init(&h->lock);
  handle_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = h;
  luaL_getmetatable(L, HANDLE_MT);
  lua_setmetatable(L, -2);
  job_t *j = job_new(h, J_OPEN);
  j->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  j->task = t;
  job_start(j, &h->conns[0]);
  return ml_task_wait(L, t, job_cancel, j);
}

/* h:run(lease|nil, mode, sql, ...) -> rows | { changes, last_id } | nil, err */
static int l_run(lua_State *L) {
  handle_t *h = check_handle(L);
  lease_t *l = lua_isnil(L, 2) ? NULL : luaL_checkudata(L, 2, LEASE_MT);
  int mode = (int)luaL_checkinteger(L, 3);
  size_t len;
  const char *sql = ml_db_checksql(L, 4, &len);
  ml_task_t *t = ml_task_current(L);
  if (l && !l->c) {
    lua_pushnil(L);
    lua_pushstring(L, "the transaction is over");
    return 2;
  }
  if (l && l->c->busy) return luaL_error(L, "a transaction runs one statement at a time");
  int n;
  ml_db_value_t *params = ml_db_value_params(L, 5, &n);
  job_t *j = job_new(h, J_RUN);
  j->mode = mode;
  j->sql = malloc(len + 1);
  if (!j->sql) abort();
  memcpy(j->sql, sql, len + 1);
  j->params = params;
  j->nparams = n;
  j->task = t;
  j->in_tx = l != NULL;
  conn_t *c = l ? l->c : conn_idle(h);
  if (c) job_start(j, c);
  else fifo_push(h, j);
  return ml_task_wait(L, t, job_cancel, j);
}

/* h:acquire() -> lease | nil, err: a connection of its own, for a transaction */
static int l_acquire(lua_State *L) {
  handle_t *h = check_handle(L);
  ml_task_t *t = ml_task_current(L);
  conn_t *c = conn_idle(h);
  if (c) {
    push_lease(L, h, c);
    return 1;
  }
  job_t *j = job_new(h, J_ACQUIRE);
  j->task = t;
  fifo_push(h, j);
  return ml_task_wait(L, t, job_cancel, j);
}

static int l_close(lua_State *L) {
  handle_t **ud = luaL_checkudata(L, 1, HANDLE_MT);
  handle_t *h = *ud;
  if (!h) return 0;
  *ud = NULL;
  handle_close(h);
  handle_unref(h);
  return 0;
}

/* lease:release(clean): clean when COMMIT or ROLLBACK ran; otherwise (and from __gc)
 * the connection is rolled back before anyone else gets it. */
static int l_release(lua_State *L) {
  lease_t *l = luaL_checkudata(L, 1, LEASE_MT);
  int clean = lua_toboolean(L, 2);
  conn_t *c = l->c;
  if (!c) return 0;
  l->c = NULL;
  c->lease = NULL;
  c->dirty = !clean;
  if (!c->busy) conn_available(l->h, c);
  return 0;
}

/* A lease the program dropped: never wake anyone from a finalizer, so a dirty
 * connection only gets its rollback job (which dispatches the waiters when it ends). */
static int l_lease_gc(lua_State *L) {
  lease_t *l = luaL_checkudata(L, 1, LEASE_MT);
  conn_t *c = l->c;
  handle_t *h = l->h;
  if (c) {
    l->c = NULL;
    c->lease = NULL;
    c->dirty = 1;
    if (!c->busy) {
      if (h->closed) conn_close(h, c);
      else {
        c->dirty = 0;
        job_start(job_new(h, J_ROLLBACK), c);
      }
    }
  }
  l->h = NULL;
  if (h) handle_unref(h);
  return 0;
}

void ml_db_sqlite_open(lua_State *L) {
  static const ml_db_driver_t driver = {HANDLE_MT, LEASE_MT, "db_sqlite_open", l_open, l_run,
                                         l_acquire, l_close, l_release, l_lease_gc};
  ml_db_register(L, &driver);
}
