/* moonlet.db's pool core (see db.h for what it does and what a driver does).
 *
 * Ownership: the handle lives while anything references it: its Lua userdata (until
 * h:close or __gc), each connection, each job, each lease. A job belongs to the FIFO, then
 * to its connection, until ml_db_job_done frees it (job_cancel frees one still waiting).
 * A connection belongs to its handle's list until conn_drop, which frees it, except while
 * ml_db_job_done wakes its task (the drop waits until the wake returns). A lease (Lua
 * userdata) holds its connection until released, collected or ended by db.c (the handle
 * closed, the connection dropped, a statement of its transaction cancelled). */
#include "db.h"
#include "mem.h"
#include "metrics.h"
#include <assert.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ml_db_lease_s {   /* Lua userdata */
  ml_db_t *db;               /* NULL once collected */
  ml_db_conn_t *c;           /* NULL once it no longer holds one */
} lease_t;

static void conn_available(ml_db_conn_t *c);
static void conn_assign(ml_db_conn_t *c, ml_db_job_t *j);

/* The metrics' in-use gauge follows c: connecting, running a job or leased (on, 1), or
 * idle (0); called wherever c's state or lease changes. */
static void conn_mark(ml_db_conn_t *c, int on) {
  if (c->in_use == on) return;
  c->in_use = on;
  ml_metrics_gauge(ML_G_DB_IN_USE, on ? 1 : -1);
}

static void conn_mark_state(ml_db_conn_t *c) {
  conn_mark(c, c->state != ML_DB_IDLE || c->lease);
}

static int push_error(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* --- handles, jobs, the FIFO ----------------------------------------------------------- */

static void db_unref(ml_db_t *db) {
  if (--db->refs > 0) return;
  assert(db->closed && ml_list_empty(&db->conns) && ml_list_empty(&db->waiting));
  free(db->target);
  free(db);
}

static ml_db_job_t *job_new(ml_db_t *db, int kind) {
  ml_db_job_t *j = ml_xcalloc(1, db->driver->job_size);
  j->db = db;
  j->kind = kind;
  j->ud_ref = LUA_NOREF;
  ml_list_init(&j->link);
  db->refs++;
  return j;
}

static void job_free(ml_db_job_t *j) {
  ml_db_t *db = j->db;
  if (db->driver->job_free) db->driver->job_free(j);
  if (j->ud_ref != LUA_NOREF) luaL_unref(db->L, LUA_REGISTRYINDEX, j->ud_ref);
  ml_db_value_free(j->params, j->nparams);
  free(j->sql);
  free(j);
  db_unref(db);
}

/* Wakes j's task (if any) with nil, msg and frees j. */
static void job_fail(ml_db_job_t *j, const char *msg) {
  ml_task_t *t = j->task;
  ml_db_t *db = j->db;
  db->refs++;
  if (t) push_error(t->co, msg);
  job_free(j);
  if (t) ml_task_wake(t, 2);
  db_unref(db);
}

/* The first job waiting for a connection, taken out of the line; NULL when none waits. */
static ml_db_job_t *fifo_take(ml_db_t *db) {
  ml_db_job_t *j = ml_list_first(&db->waiting, ml_db_job_t, link);
  if (j) {
    ml_list_remove(&j->link);
    ml_metrics_gauge(ML_G_DB_WAITING, -1);
  }
  return j;
}

/* The task no longer waits: a job still waiting for a connection goes; a running one is
 * the driver's to stop, and ml_db_job_done throws its outcome away. */
static void job_cancel(ml_task_t *t) {
  ml_db_job_t *j = t->wait;
  ml_db_conn_t *c = j->conn;
  j->task = NULL;
  if (j->ud_ref != LUA_NOREF) {   /* now, while the state surely lives */
    luaL_unref(j->db->L, LUA_REGISTRYINDEX, j->ud_ref);
    j->ud_ref = LUA_NOREF;
  }
  if (!c) {
    ml_list_remove(&j->link);
    ml_metrics_gauge(ML_G_DB_WAITING, -1);
    job_free(j);
  } else if (c->state == ML_DB_CONNECTING) {   /* the connection comes up for the next one */
    c->job = NULL;
    job_free(j);
  } else {
    j->db->driver->cancel(c, j);
  }
}

/* --- leases ---------------------------------------------------------------------------- */

static void push_lease(lua_State *L, ml_db_conn_t *c) {
  lease_t *l = lua_newuserdata(L, sizeof *l);
  l->db = c->db;
  l->c = c;
  c->lease = l;
  conn_mark(c, 1);
  c->db->refs++;
  luaL_getmetatable(L, c->db->driver->lease_mt);
  lua_setmetatable(L, -2);
}

static void lease_end(ml_db_conn_t *c) {
  if (!c->lease) return;
  c->lease->c = NULL;
  c->lease = NULL;
  conn_mark_state(c);
}

/* --- connections ----------------------------------------------------------------------- */

/* Idle and nobody's: it may serve the next job (after its rollback, if dirty). */
static int conn_free(const ml_db_conn_t *c) {
  return c->state == ML_DB_IDLE && !c->lease && !c->held && !c->drop_later;
}

/* A new connection in db's list: idle, or connecting for j (which may be NULL). NULL with
 * err when the driver cannot start one. */
static ml_db_conn_t *conn_new(ml_db_t *db, ml_db_job_t *j, char *err) {
  ml_db_conn_t *c = ml_xcalloc(1, db->driver->conn_size);
  c->db = db;
  c->state = ML_DB_CONNECTING;
  ml_list_init(&c->queue);
  int r = db->driver->connect(c, err);
  if (r < 0) {
    free(c);
    return NULL;
  }
  if (r > 0) {
    c->state = ML_DB_IDLE;
  } else if (j) {
    c->job = j;
    j->conn = c;
  }
  ml_list_unshift(&db->conns, &c->link);
  db->nconns++;
  conn_mark_state(c);
  db->refs++;
  return c;
}

/* Opens connections for waiters while there is room (after one was dropped). Drivers
 * whose connections are ready at once drop them only when the handle closes. */
static void fifo_spawn(ml_db_t *db) {
  ml_db_job_t *j;
  while (!db->closed && db->nconns < db->size && (j = fifo_take(db))) {
    char err[ML_DB_ERRLEN];
    ml_db_conn_t *c = conn_new(db, j, err);
    if (!c) job_fail(j, err);
    else if (c->state == ML_DB_IDLE) conn_assign(c, j);
  }
}

/* Closes c and frees it; its lease ends. While its task is being woken, only marks it. */
static void conn_drop(ml_db_conn_t *c) {
  ml_db_t *db = c->db;
  assert(!c->job);
  lease_end(c);
  if (c->waking) {
    c->drop_later = 1;
    return;
  }
  ml_list_remove(&c->link);
  db->nconns--;
  conn_mark(c, 0);
  db->driver->disconnect(c);
  free(c);
  fifo_spawn(db);
  db_unref(db);
}

/* Starts j on idle c. Returns 0, or -1 with err (c cannot serve: the caller drops it). */
static int conn_send(ml_db_conn_t *c, ml_db_job_t *j, char *err) {
  assert(c->state == ML_DB_IDLE);
  c->state = ML_DB_BUSY;
  c->job = j;
  c->njobs = 1;
  j->conn = c;
  conn_mark(c, 1);
  if (c->db->driver->send(c, j, err) == 0) return 0;
  c->state = ML_DB_IDLE;
  conn_mark_state(c);
  c->job = NULL;
  c->njobs = 0;
  j->conn = NULL;
  return -1;
}

/* Pipelining (db->pipeline > 1): may busy c take more statements? Not when leased, held,
 * full, or running db.c's own ROLLBACK. */
static int conn_pipeable(const ml_db_conn_t *c) {
  const ml_db_t *db = c->db;
  return db->pipeline > 1 && db->driver->append && !db->closed && c->state == ML_DB_BUSY &&
         !c->lease && !c->held && !c->dirty && !c->drop_later && c->job->kind == ML_DB_RUN &&
         c->njobs < db->pipeline;
}

/* Statement j goes behind pipeable c's jobs if the driver takes it there: it waits only
 * for the results ahead of its own. 1 sent, 0 not, -1 with err (c was dropped). */
static int conn_append(ml_db_conn_t *c, ml_db_job_t *j, char *err) {
  int r = c->db->driver->append(c, j, err);
  if (r > 0) {
    j->conn = c;
    ml_list_push(&c->queue, &j->link);
    c->njobs++;
  } else if (r < 0) {
    ml_db_conn_failed(c, err);
  }
  return r;
}

/* A new statement j finds every connection busy: the one with the fewest jobs may take it,
 * unless others wait in line already (j goes behind them: under a steady stream of
 * statements a connection would otherwise never drain for a waiting transaction). */
static int conn_pipe(ml_db_t *db, ml_db_job_t *j, char *err) {
  ml_db_conn_t *best = NULL;
  if (j->kind != ML_DB_RUN || !ml_list_empty(&db->waiting)) return 0;
  ml_list_each(l, &db->conns) {
    ml_db_conn_t *c = ml_list_item(l, ml_db_conn_t, link);
    if (conn_pipeable(c) && (!best || c->njobs < best->njobs)) best = c;
  }
  return best ? conn_append(best, j, err) : 0;
}

/* Busy c has room: waiters go behind its jobs, first come first, while the driver takes
 * them (under load the line drains a pipeline at a time, not a statement at a time). */
static void fifo_pipe(ml_db_conn_t *c) {
  ml_db_t *db = c->db;
  ml_db_job_t *j;
  char err[ML_DB_ERRLEN];
  while (conn_pipeable(c) && (j = ml_list_first(&db->waiting, ml_db_job_t, link)) &&
         j->kind == ML_DB_RUN) {
    ml_list_remove(&j->link);
    int r = conn_append(c, j, err);
    if (r == 0) {   /* back to the front of the line */
      ml_list_unshift(&db->waiting, &j->link);
      return;
    }
    ml_metrics_gauge(ML_G_DB_WAITING, -1);
    if (r < 0) {
      job_fail(j, err);
      return;
    }
  }
}

/* Starts a ROLLBACK on idle c (nobody waits for it); -1 when c cannot serve. */
static int conn_rollback(ml_db_conn_t *c) {
  char err[ML_DB_ERRLEN];
  ml_db_job_t *j = job_new(c->db, ML_DB_ROLLBACK);
  j->sql = ml_xstrdup("ROLLBACK");
  if (conn_send(c, j, err) == 0) return 0;
  job_free(j);
  return -1;
}

/* A free connection for a new job, or NULL (jobs already wait, or none is free). A dead
 * one found on the way is dropped; a dirty one waits for ml_db_job_done to roll it back. */
static ml_db_conn_t *conn_idle(ml_db_t *db) {
  if (!ml_list_empty(&db->waiting)) return NULL;
  ml_list_each(l, &db->conns) {
    ml_db_conn_t *c = ml_list_item(l, ml_db_conn_t, link);
    if (conn_free(c) && !c->dirty) {
      if (!db->driver->alive || db->driver->alive(c)) return c;
      conn_drop(c);
    }
  }
  return NULL;
}

/* Gives idle c to j (from a callback: j's task may be woken). */
static void conn_assign(ml_db_conn_t *c, ml_db_job_t *j) {
  char err[ML_DB_ERRLEN];
  if (j->kind == ML_DB_ACQUIRE) {
    ml_task_t *t = j->task;
    push_lease(t->co, c);
    job_free(j);
    ml_task_wake(t, 1);
    return;
  }
  if (conn_send(c, j, err) == 0) {
    fifo_pipe(c);
    return;
  }
  ml_db_t *db = c->db;
  db->refs++;
  conn_drop(c);
  job_fail(j, err);
  db_unref(db);
}

/* c is free: roll back what its last user left open, else serve the first waiter. */
static void conn_available(ml_db_conn_t *c) {
  ml_db_t *db = c->db;
  int tx = db->closed ? ML_DB_TX_BROKEN : db->driver->txn(c);
  if (tx == ML_DB_TX_BROKEN) {
    conn_drop(c);
    return;
  }
  if (c->dirty) {
    c->dirty = 0;
    if (tx == ML_DB_TX_OPEN) {
      if (conn_rollback(c)) conn_drop(c);
      return;
    }
  }
  ml_db_job_t *j = fifo_take(db);
  if (j) conn_assign(c, j);
}

/* Waiters are woken with nil, "closed"; idle connections close now, busy ones when their
 * job ends; leases end. */
static void db_close(ml_db_t *db) {
  if (db->closed) return;
  db->closed = 1;
  ml_db_job_t *j;
  while ((j = fifo_take(db))) job_fail(j, "closed");
  ml_list_each(l, &db->conns) {
    ml_db_conn_t *c = ml_list_item(l, ml_db_conn_t, link);
    lease_end(c);
    if (c->state == ML_DB_IDLE) conn_drop(c);
  }
}

/* --- what drivers call ----------------------------------------------------------------- */

void ml_db_conn_ready(ml_db_conn_t *c) {
  ml_db_job_t *j = c->job;
  assert(c->state == ML_DB_CONNECTING);
  c->state = ML_DB_IDLE;
  c->job = NULL;
  conn_mark_state(c);
  if (j) conn_assign(c, j);
  else conn_available(c);
}

void ml_db_conn_failed(ml_db_conn_t *c, const char *msg) {
  ml_db_t *db = c->db;
  ml_db_job_t *j = c->job;
  ml_list_t behind;          /* pipelined jobs fail with it */
  char copy[ML_DB_ERRLEN];   /* msg may live in what the drop frees */
  snprintf(copy, sizeof copy, "%s", msg ? msg : "");
  ml_list_take_all(&c->queue, &behind);
  c->job = NULL;
  c->njobs = 0;
  db->refs++;
  conn_drop(c);
  if (j) job_fail(j, copy);
  while ((j = ml_list_first(&behind, ml_db_job_t, link))) {
    ml_list_remove(&j->link);
    job_fail(j, copy);
  }
  db_unref(db);
}

int ml_db_job_done(ml_db_conn_t *c) {
  ml_db_t *db = c->db;
  ml_db_job_t *j = c->job;
  ml_db_job_t *next = ml_list_first(&c->queue, ml_db_job_t, link);
  ml_task_t *t = j->task;
  int n = 0, alive = 1;
  assert(c->state == ML_DB_BUSY);
  if (next) {   /* the next pipelined job's results come now */
    ml_list_remove(&next->link);
    c->job = next;
    c->njobs--;
  } else {
    c->state = ML_DB_IDLE;
    c->job = NULL;
    c->njobs = 0;
    conn_mark_state(c);
    /* Outside a transaction of moonlet's, no statement may hand an open transaction (a
     * script whose COMMIT an error skipped, an interrupted one) to the connection's next
     * user: it is rolled back first. (Drivers pipeline only statements that cannot.) */
    if (!c->lease && db->driver->txn(c) != ML_DB_TX_NONE) c->dirty = 1;
  }
  if (t) {
    n = db->driver->push(t->co, j);
    if (n == 0) {   /* an ML_DB_OPEN that worked: the result is the handle */
      lua_rawgeti(t->co, LUA_REGISTRYINDEX, j->ud_ref);
      n = 1;
    }
  } else if (c->lease && j->kind == ML_DB_RUN) {   /* cancelled inside a transaction */
    lease_end(c);
    c->dirty = 1;
  }
  db->refs++;   /* past job_free and the wake */
  job_free(j);
  /* the woken task may use c again, release its lease or close the handle; what would
   * drop c (there, or serving the next waiter) waits, so that the caller learns it */
  c->waking = 1;
  if (t) ml_task_wake(t, n);
  if (!c->drop_later && conn_free(c)) conn_available(c);
  else if (next && !c->drop_later) fifo_pipe(c);
  c->waking = 0;
  if (c->drop_later) {
    c->drop_later = 0;
    conn_drop(c);
    alive = 0;
  }
  db_unref(db);
  return alive;
}

void ml_db_job_requeue(ml_db_conn_t *c) {
  ml_db_job_t *next = ml_list_first(&c->queue, ml_db_job_t, link);
  if (!next) return;
  ml_list_remove(&next->link);
  ml_list_push(&c->queue, &c->job->link);
  c->job = next;
}

void ml_db_conn_hold(ml_db_conn_t *c) { c->held = 1; }

void ml_db_conn_unhold(ml_db_conn_t *c) {
  c->held = 0;
  if (conn_free(c) && !c->waking) conn_available(c);
}

/* --- Lua ------------------------------------------------------------------------------- */

static const ml_db_driver_t *driver_of(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static ml_db_t *check_db(lua_State *L) {
  ml_db_t **ud = luaL_checkudata(L, 1, driver_of(L)->handle_mt);
  if (!*ud) luaL_error(L, "the database handle is closed");
  return *ud;
}

/* j (from a task of L) gets c when given (idle), else a new connection (up to db->size) or
 * a place in the FIFO, and its task waits. Returns what run, acquire and open return:
 * nil, err at once (j freed) when no connection can even be started. */
static int job_submit(lua_State *L, ml_db_t *db, ml_db_job_t *j, ml_db_conn_t *c) {
  char err[ML_DB_ERRLEN];
  if (!c && db->nconns < db->size) {
    c = conn_new(db, j, err);
    if (!c) {
      job_free(j);
      return push_error(L, err);
    }
    if (c->state == ML_DB_CONNECTING) return ml_task_wait(L, j->task, job_cancel, j);
  } else if (!c) {
    int r = conn_pipe(db, j, err);
    if (r < 0) {
      job_free(j);
      return push_error(L, err);
    }
    if (r > 0) return ml_task_wait(L, j->task, job_cancel, j);
    ml_list_push(&db->waiting, &j->link);
    ml_metrics_gauge(ML_G_DB_WAITING, 1);
    return ml_task_wait(L, j->task, job_cancel, j);
  }
  if (j->kind == ML_DB_ACQUIRE) {
    push_lease(L, c);
    job_free(j);
    return 1;
  }
  if (conn_send(c, j, err)) {   /* c is in no state to serve anyone (a lease's ends) */
    conn_drop(c);
    job_free(j);
    return push_error(L, err);
  }
  return ml_task_wait(L, j->task, job_cancel, j);
}

/* open(target, connections, pipeline) -> handle | nil, err */
static int l_open(lua_State *L) {
  const ml_db_driver_t *d = driver_of(L);
  const char *target = luaL_checkstring(L, 1);
  int size = (int)luaL_optinteger(L, 2, d->default_size);
  int pipeline = (int)luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, size >= 1 && size <= d->max_size, 2,
                lua_pushfstring(L, "expected 1 to %d connections", d->max_size));
  int most = d->append ? ML_DB_PIPELINE_MAX : 1;
  luaL_argcheck(L, pipeline >= 1 && pipeline <= most, 3,
                lua_pushfstring(L, "expected 1 to %d statements per connection", most));
  ml_task_t *t = ml_task_current(L);
  char err[ML_DB_ERRLEN];
  ml_db_t *db = ml_xcalloc(1, sizeof *db);
  db->driver = d;
  ml_list_init(&db->conns);
  ml_list_init(&db->waiting);
  db->loop = t->sched->loop;
  db->L = t->sched->L;
  db->target = ml_xstrdup(target);
  db->size = size;
  db->pipeline = pipeline;
  db->refs = 1;
  if (d->init && d->init(db, err)) {
    free(db->target);
    free(db);
    return push_error(L, err);
  }
  ml_db_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = db;
  luaL_getmetatable(L, d->handle_mt);
  lua_setmetatable(L, -2);
  if (!d->open_connects) return 1;
  ml_db_job_t *j = job_new(db, ML_DB_OPEN);
  j->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* the userdata, until the job ends */
  j->task = t;
  return job_submit(L, db, j, NULL);
}

static const char *check_sql(lua_State *L, int idx, size_t *len) {
  luaL_argcheck(L, lua_type(L, idx) == LUA_TSTRING, idx, "expected the SQL text (a string)");
  return lua_tolstring(L, idx, len);
}

/* h:run(lease|nil, mode, sql, ...) -> rows | { changes, last_id } | nil, err */
static int l_run(lua_State *L) {
  ml_db_t *db = check_db(L);
  const ml_db_driver_t *d = db->driver;
  lease_t *l = lua_isnil(L, 2) ? NULL : luaL_checkudata(L, 2, d->lease_mt);
  int mode = (int)luaL_checkinteger(L, 3);
  size_t len;
  const char *sql = check_sql(L, 4, &len);
  ml_task_t *t = ml_task_current(L);
  if (l && !l->c) return push_error(L, "the transaction is over");
  if (l && l->c->state != ML_DB_IDLE)
    return luaL_error(L, "a transaction runs one statement at a time");
  int n;
  ml_db_value_t *params = ml_db_value_params(L, 5, &n);   /* may raise: before job_new */
  ml_db_job_t *j = job_new(db, ML_DB_RUN);
  j->mode = mode;
  j->params = params;
  j->nparams = n;
  j->task = t;
  char err[ML_DB_ERRLEN];
  if (d->prepare) {
    if (d->prepare(j, sql, len, err)) {
      job_free(j);
      return push_error(L, err);
    }
  } else {
    j->sql = ml_xmalloc(len + 1);
    memcpy(j->sql, sql, len + 1);
  }
  return job_submit(L, db, j, l ? l->c : conn_idle(db));
}

/* h:acquire() -> lease | nil, err: a connection of its own, for a transaction */
static int l_acquire(lua_State *L) {
  ml_db_t *db = check_db(L);
  ml_db_job_t *j = job_new(db, ML_DB_ACQUIRE);
  j->task = ml_task_current(L);
  return job_submit(L, db, j, conn_idle(db));
}

/* h:close(), and the handle's __gc */
static int l_close(lua_State *L) {
  ml_db_t **ud = luaL_checkudata(L, 1, driver_of(L)->handle_mt);
  ml_db_t *db = *ud;
  if (!db) return 0;
  *ud = NULL;
  db_close(db);
  db_unref(db);
  return 0;
}

/* lease:release(clean): clean when COMMIT or ROLLBACK ran; otherwise the connection is
 * rolled back before anyone else gets it. */
static int l_release(lua_State *L) {
  lease_t *l = luaL_checkudata(L, 1, driver_of(L)->lease_mt);
  ml_db_conn_t *c = l->c;
  if (!c) return 0;
  lease_end(c);
  c->dirty = !lua_toboolean(L, 2);
  if (conn_free(c)) conn_available(c);
  return 0;
}

/* A lease the program dropped. From a finalizer nobody may be woken, so the connection
 * gets a ROLLBACK (harmless outside a transaction) whose end serves the waiters. */
static int l_lease_gc(lua_State *L) {
  lease_t *l = luaL_checkudata(L, 1, driver_of(L)->lease_mt);
  ml_db_conn_t *c = l->c;
  ml_db_t *db = l->db;
  l->db = NULL;
  if (c) {
    lease_end(c);
    c->dirty = 1;
    if (conn_free(c)) {
      c->dirty = 0;
      if (db->closed || db->driver->txn(c) == ML_DB_TX_BROKEN || conn_rollback(c)) conn_drop(c);
    }
  }
  if (db) db_unref(db);
  return 0;
}

/* t[name] = fn, with d as its upvalue (the functions serve every driver). */
static void set_fn(lua_State *L, const ml_db_driver_t *d, lua_CFunction fn, const char *name) {
  lua_pushlightuserdata(L, (void *)d);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
}

void ml_db_install(lua_State *L, const ml_db_driver_t *d) {
  luaL_newmetatable(L, d->handle_mt);
  lua_newtable(L);
  set_fn(L, d, l_run, "run");
  set_fn(L, d, l_acquire, "acquire");
  set_fn(L, d, l_close, "close");
  lua_setfield(L, -2, "__index");
  set_fn(L, d, l_close, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, d->lease_mt);
  lua_newtable(L);
  set_fn(L, d, l_release, "release");
  lua_setfield(L, -2, "__index");
  set_fn(L, d, l_lease_gc, "__gc");
  lua_pop(L, 1);
  set_fn(L, d, l_open, d->open_name);
}
