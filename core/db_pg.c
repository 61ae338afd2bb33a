/* PostgreSQL for moonlet.db (see db.h for the handle's Lua face).
 *
 * libpq's non-blocking API driven by the loop: PQconnectStart/PQconnectPoll to connect,
 * one flight per statement to send, PQflush while the socket takes no more, and
 * PQconsumeInput/PQisBusy/PQgetResult when it is readable. A connection's uv_poll lives as
 * long as it does (starting it costs epoll_ctl calls); while the connection is idle it is
 * unref'd, so idle connections keep no loop alive (a pool thread's loop must run dry).
 *
 * Statements: each connection prepares a SQL text the first time it sees it (PREPARE +
 * execute by name + Sync in one flight, in pipeline mode) and executes it by name after;
 * an LRU of ML_DB_PG_STMT_MAX statements (db_pg_stmt.c), the oldest deallocated to make
 * room. A script of several commands (no parameters) goes through the simple query
 * protocol, uncached.
 *
 * A handle keeps up to `size` connections, opened when needed; a query that finds none
 * free waits in a FIFO. An idle connection whose socket turned readable (the server went
 * away or restarted) is dropped and replaced before use; one that breaks mid-query fails
 * that query with nil, err and is dropped. Cancelling a running query sends a cancel
 * request (PQcancel, on libuv's threadpool since it connects and blocks) and drains the
 * connection before it serves anyone else.
 *
 * Ownership: connections, jobs and leases each hold a reference on the handle. A job
 * belongs to the FIFO, then to its connection until its results are handed over. */
#include "db.h"
#include "db_pg_value.h"
#include "db_pg_sql.h"
#include "db_pg_stmt.h"
#include "task.h"
#include "log.h"
#include <assert.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HANDLE_MT "moonlet.db.pg"
#define LEASE_MT "moonlet.db.pg.lease"
#define DEFAULT_CONNS 10
#define STMT_MAX_SQL 8192    /* longer statements run unnamed, never cached */

typedef struct lease_s lease_t;
typedef struct job_s job_t;
typedef struct conn_s conn_t;

enum { C_CONNECTING, C_IDLE, C_BUSY };
enum { J_RUN, J_ACQUIRE, J_ROLLBACK };
enum { S_IGNORE, S_PREPARE, S_EXEC };   /* what a pipelined result answers */

typedef struct {
  uv_loop_t *loop;
  char *conninfo;
  int size, nconns;
  conn_t *conns;             /* all of them */
  job_t *head, *tail;        /* waiting for a connection */
  int refs;                  /* the Lua userdata, connections, jobs, leases */
  int closed;
} handle_t;

struct conn_s {
  handle_t *h;
  PGconn *pg;
  uv_poll_t *poll;           /* from connecting to drop; freed by its close callback */
  int fd;
  int events;                /* what poll watches */
  int state;
  job_t *job;                /* CONNECTING: what it is for; BUSY: the query */
  PGresult *res;             /* BUSY: the first error, else the last result so far */
  lease_t *lease;
  int dirty;                 /* released mid-transaction: roll back before reuse */
  struct cancel_s *cancelling;   /* a PQcancel on its way: no new query until it is done */
  int waking;                /* query_done is waking its task: c must outlive that */
  int drop_later;            /* dropped while waking */
  ml_db_pg_stmt_cache_t stmts;   /* what it has prepared */
  conn_t *next, *prev;
};

/* A PQcancel running on libuv's threadpool (it blocks). */
typedef struct cancel_s {
  uv_work_t req;
  PGcancel *cancel;
  conn_t *c;                 /* NULL once the connection was dropped */
} cancel_t;

struct lease_s {             /* Lua userdata */
  handle_t *h;
  conn_t *c;                 /* NULL once released or broken */
};

struct job_s {
  handle_t *h;
  conn_t *c;
  ml_task_t *task;           /* NULL when nobody waits (cancelled, internal) */
  int kind, mode;
  char *sql;                 /* with $n placeholders */
  uint32_t hash;             /* of sql */
  int nparams;
  int multi;                 /* several commands: the simple query protocol */
  char **values;             /* text parameters, NULL for NULL */
  /* what job_send sent: in pipeline mode, steps[] says what each result answers */
  int pipeline, syncs, nsteps, step, nulls;
  unsigned char steps[4];
  ml_db_pg_stmt_t *stmt;     /* the prepared statement it runs (NULL: unnamed) */
  int hit;                   /* stmt was prepared by an earlier job */
  int retried;               /* already re-prepared once */
  job_t *next, *prev;
};

static void conn_available(conn_t *c);
static void conn_drop(conn_t *c);
static void conn_assign(conn_t *c, job_t *j);
static void poll_cb(uv_poll_t *p, int status, int events);

/* Server notices (VACUUM's warnings, "there is no transaction in progress") go to the
 * log at debug level, not to stderr. */
static void notice_cb(void *arg, const char *message) {
  (void)arg;
  size_t n = strlen(message);
  while (n && message[n - 1] == '\n') n--;
  ml_log(ML_LOG_DEBUG, "postgres: %.*s", (int)n, message);
}

static void handle_unref(handle_t *h) {
  if (--h->refs > 0) return;
  assert(h->closed && !h->conns && !h->head);
  free(h->conninfo);
  free(h);
}

static job_t *job_new(handle_t *h, int kind) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->h = h;
  j->kind = kind;
  h->refs++;
  return j;
}

static void job_free(job_t *j) {
  for (int i = 0; i < j->nparams; i++) free(j->values[i]);
  free(j->values);
  free(j->sql);
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

/* libpq's messages end with a newline and may span lines: keep the first line. */
static void push_pgerr(lua_State *L, const char *msg) {
  if (!msg || !*msg) msg = "connection failed";
  size_t n = strcspn(msg, "\n");
  lua_pushnil(L);
  lua_pushlstring(L, msg, n);
}

/* Wakes j's task (if any) with nil, msg and frees j. */
static void job_fail(job_t *j, const char *msg) {
  ml_task_t *t = j->task;
  handle_t *h = j->h;
  h->refs++;
  if (t) push_pgerr(t->co, msg);
  job_free(j);
  if (t) ml_task_wake(t, 2);
  handle_unref(h);
}

/* --- polling --------------------------------------------------------------------------- */

static void poll_closed_cb(uv_handle_t *p) { free(p); }

static void poll_stop(conn_t *c) {
  if (!c->poll) return;
  c->poll->data = NULL;
  uv_close((uv_handle_t *)c->poll, poll_closed_cb);
  c->poll = NULL;
}

/* Watches c's socket (which libpq may change while connecting) for events, keeping the
 * loop alive. uv_poll_start costs epoll_ctl calls even for the same events: only a change
 * calls it. */
static int poll_want(conn_t *c, int events) {
  int fd = PQsocket(c->pg);
  if (fd < 0) return -1;
  if (c->poll && fd != c->fd) poll_stop(c);
  if (!c->poll) {
    c->poll = malloc(sizeof *c->poll);
    if (!c->poll) abort();
    if (uv_poll_init(c->h->loop, c->poll, fd)) {
      free(c->poll);
      c->poll = NULL;
      return -1;
    }
    c->poll->data = c;
    c->fd = fd;
    c->events = 0;
  }
  uv_ref((uv_handle_t *)c->poll);
  if (events == c->events) return 0;
  if (uv_poll_start(c->poll, events, poll_cb)) {
    poll_stop(c);
    return -1;
  }
  c->events = events;
  return 0;
}

/* c went idle: its socket stays watched for the server speaking first (a notice, or the
 * end of the connection), without keeping the loop alive (a pool thread's loop must be
 * able to run dry). Without a watcher conn_alive still catches a dead connection. */
static void poll_idle(conn_t *c) {
  if (poll_want(c, UV_READABLE)) poll_stop(c);
  else uv_unref((uv_handle_t *)c->poll);
}

/* --- connections ----------------------------------------------------------------------- */

/* A new connection, connecting, for j (NULL: none). Returns NULL with *err set when
 * libpq refuses at once. */
static conn_t *conn_new(handle_t *h, job_t *j, const char **err) {
  PGconn *pg = PQconnectStart(h->conninfo);
  if (!pg) abort();
  PQsetNoticeProcessor(pg, notice_cb, NULL);
  conn_t *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->h = h;
  c->pg = pg;
  c->state = C_CONNECTING;
  if (PQstatus(pg) == CONNECTION_BAD || poll_want(c, UV_WRITABLE)) {
    static __thread char buf[256];   /* each pool thread connects on its own */
    snprintf(buf, sizeof buf, "%s", PQerrorMessage(pg));
    *err = buf;
    poll_stop(c);
    PQfinish(pg);
    free(c);
    return NULL;
  }
  c->job = j;
  if (j) j->c = c;
  c->next = h->conns;
  if (h->conns) h->conns->prev = c;
  h->conns = c;
  h->nconns++;
  h->refs++;
  return c;
}

/* Starts connections for waiters while there is room (after one was dropped). */
static void fifo_spawn(handle_t *h) {
  while (!h->closed && h->head && h->nconns < h->size) {
    job_t *j = h->head;
    const char *err;
    fifo_unlink(h, j);
    if (!conn_new(h, j, &err)) job_fail(j, err);
  }
}

/* Closes c and forgets it; its lease (if any) ends. */
static void conn_drop(conn_t *c) {
  handle_t *h = c->h;
  assert(!c->job);
  if (c->waking) {
    c->drop_later = 1;
    return;
  }
  if (c->prev) c->prev->next = c->next; else h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  h->nconns--;
  if (c->lease) c->lease->c = NULL;
  if (c->cancelling) c->cancelling->c = NULL;
  poll_stop(c);
  if (c->res) PQclear(c->res);
  PQfinish(c->pg);
  ml_db_pg_stmt_clear(&c->stmts);
  free(c);
  fifo_spawn(h);
  handle_unref(h);
}

/* The connection broke (or never came up): its job fails with libpq's message. */
static void conn_broken(conn_t *c, const char *why) {
  job_t *j = c->job;
  c->job = NULL;
  handle_t *h = c->h;
  h->refs++;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", *PQerrorMessage(c->pg) ? PQerrorMessage(c->pg) : why);
  conn_drop(c);
  if (j) job_fail(j, msg);
  handle_unref(h);
}

/* An idle connection is alive when its socket has nothing to say: the server only
 * speaks first to end it (shutdown, restart, admin kill). */
static int conn_alive(conn_t *c) {
  if (PQstatus(c->pg) != CONNECTION_OK) return 0;
  struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
  return poll(&pfd, 1, 0) == 0;
}

/* A free, live connection for a new job, or NULL (jobs already wait, or none free). One
 * that must be rolled back first, or that waits for its cancel request to land, is not
 * free (query_done and cancel_after_cb hand it on when it is). */
static conn_t *conn_idle(handle_t *h) {
  if (h->head) return NULL;
  conn_t *c = h->conns;
  while (c) {
    conn_t *next = c->next;
    if (c->state == C_IDLE && !c->lease && !c->drop_later && !c->dirty && !c->cancelling) {
      if (conn_alive(c)) return c;
      conn_drop(c);
    }
    c = next;
  }
  return NULL;
}

static int pipe_step(job_t *j, int ok, int kind) {
  if (ok) j->steps[j->nsteps++] = (unsigned char)kind;
  return ok;
}

/* Queues `DEALLOCATE name` and a Sync of its own: whatever it answers, what follows runs. */
static int pipe_deallocate(conn_t *c, job_t *j, const ml_db_pg_stmt_t *s) {
  char sql[48];
  snprintf(sql, sizeof sql, "DEALLOCATE %s", s->name);
  if (!pipe_step(j, PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0), S_IGNORE) ||
      !PQpipelineSync(c->pg))
    return 0;
  j->syncs++;
  return 1;
}

/* Sends j in one flight, in pipeline mode: its statement by name when c has it prepared,
 * else PREPARE + execute by name (after a DEALLOCATE of the statement it replaces, if
 * any), then a Sync. Runs it unnamed when it must not be cached: too long, in a failed
 * transaction (everything but ROLLBACK fails there anyway), or when making room would
 * need a DEALLOCATE inside a transaction block (which could abort it). */
static int send_pipeline(conn_t *c, job_t *j) {
  PGconn *pg = c->pg;
  if (!PQenterPipelineMode(pg)) return 0;
  j->pipeline = 1;
  PGTransactionStatusType tx = PQtransactionStatus(pg);
  if (!j->hash) j->hash = ml_db_pg_stmt_hash(j->sql);
  ml_db_pg_stmt_t *s = ml_db_pg_stmt_find(&c->stmts, j->sql, j->hash);
  if (s && s->ready && !s->stale) {
    ml_db_pg_stmt_touch(&c->stmts, s);
    j->hit = 1;
  } else if (tx == PQTRANS_INERROR || (s && tx != PQTRANS_IDLE) ||
             (!s && (strlen(j->sql) > STMT_MAX_SQL ||
                     (ml_db_pg_stmt_full(&c->stmts) && tx != PQTRANS_IDLE)))) {
    s = NULL;   /* unnamed */
  } else {
    if (s) {   /* its plan went bad: replace it */
      if (s->stale && !pipe_deallocate(c, j, s)) return 0;
      s->stale = s->ready = 0;
      ml_db_pg_stmt_touch(&c->stmts, s);
    } else {
      if (ml_db_pg_stmt_full(&c->stmts)) {   /* make room: the least recently used goes */
        ml_db_pg_stmt_t *old = c->stmts.oldest;
        int ok = pipe_deallocate(c, j, old);
        ml_db_pg_stmt_forget(&c->stmts, old);
        if (!ok) return 0;
      }
      s = ml_db_pg_stmt_add(&c->stmts, j->sql, j->hash);
    }
    j->stmt = s;
    if (!pipe_step(j, PQsendPrepare(pg, s->name, j->sql, j->nparams, NULL), S_PREPARE)) return 0;
  }
  j->stmt = s;
  int ok;
  if (s) {
    ok = PQsendQueryPrepared(pg, s->name, j->nparams, (const char *const *)j->values, NULL, NULL, 0);
  } else {
    ok = PQsendQueryParams(pg, j->sql, j->nparams, NULL, (const char *const *)j->values,
                           NULL, NULL, 0);
  }
  if (!pipe_step(j, ok, S_EXEC) || !PQpipelineSync(pg)) return 0;
  j->syncs++;
  return 1;
}

/* Sends j's statement on idle connection c. Returns 0, or -1 (c is then broken). */
static int job_send(conn_t *c, job_t *j) {
  j->pipeline = j->syncs = j->nsteps = j->step = j->nulls = j->hit = 0;
  j->stmt = NULL;
  int ok = j->multi ? PQsendQuery(c->pg, j->sql) : send_pipeline(c, j);
  if (!ok) {
    if (j->stmt && !j->stmt->ready) ml_db_pg_stmt_forget(&c->stmts, j->stmt);
    j->stmt = NULL;
    return -1;
  }
  c->state = C_BUSY;
  c->job = j;
  j->c = c;
  int f = PQflush(c->pg);
  if (f < 0 || poll_want(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE)) {
    c->job = NULL;
    c->state = C_IDLE;
    return -1;
  }
  return 0;
}

static void push_lease(lua_State *L, conn_t *c) {
  lease_t *l = lua_newuserdata(L, sizeof *l);
  l->h = c->h;
  l->c = c;
  c->lease = l;
  c->h->refs++;
  luaL_getmetatable(L, LEASE_MT);
  lua_setmetatable(L, -2);
}

/* job_send(c, j) failed: c goes, j fails with libpq's message. */
static void send_failed(conn_t *c, job_t *j) {
  handle_t *h = c->h;
  h->refs++;
  char msg[256];
  snprintf(msg, sizeof msg, "%s", PQerrorMessage(c->pg));
  conn_drop(c);
  job_fail(j, msg);
  handle_unref(h);
}

/* Gives idle connection c to j (from a callback: j's task may be woken). */
static void conn_assign(conn_t *c, job_t *j) {
  if (j->kind == J_ACQUIRE) {
    ml_task_t *t = j->task;
    push_lease(t->co, c);
    job_free(j);
    ml_task_wake(t, 1);
    return;
  }
  if (job_send(c, j) == 0) return;
  send_failed(c, j);
}

/* c is idle and unleased: roll back what its last lease left, then serve the FIFO. */
static void conn_available(conn_t *c) {
  handle_t *h = c->h;
  if (h->closed || PQstatus(c->pg) != CONNECTION_OK) {
    conn_drop(c);
    return;
  }
  if (c->dirty) {
    c->dirty = 0;
    PGTransactionStatusType tx = PQtransactionStatus(c->pg);
    if (tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR) {
      job_t *j = job_new(h, J_ROLLBACK);
      j->sql = strdup("ROLLBACK");
      if (job_send(c, j) == 0) return;
      job_free(j);
      conn_drop(c);
      return;
    }
    if (tx != PQTRANS_IDLE) {
      conn_drop(c);
      return;
    }
  }
  job_t *j = h->head;
  if (!j) return;
  fifo_unlink(h, j);
  conn_assign(c, j);
}

/* --- results --------------------------------------------------------------------------- */

/* The query on c ended (PQgetResult gave NULL): hand the result over, free the job. */
static void query_done(conn_t *c) {
  handle_t *h = c->h;
  job_t *j = c->job;
  PGresult *r = c->res;
  c->job = NULL;
  c->res = NULL;
  c->state = C_IDLE;
  poll_idle(c);
  ml_task_t *t = j->task;
  int n = 0;
  /* A statement outside a transaction of moonlet's that leaves one open (a script whose
   * COMMIT was skipped by an error, or a disconnect in the middle of it) must not hand an
   * open transaction to the next user of the connection: roll it back first. */
  if (!c->lease && PQtransactionStatus(c->pg) != PQTRANS_IDLE) c->dirty = 1;
  if (t) {
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0 && j->sql &&
        strncasecmp(j->sql, "ROLLBACK", 8) != 0) {
      /* COMMIT of a transaction an earlier statement aborted: nothing was committed */
      push_pgerr(t->co, "transaction rolled back: a statement in it failed");
      n = 2;
    } else if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
      if (j->mode == ML_DB_EXEC) ml_db_pg_value_push_changes(t->co, r);
      else ml_db_pg_value_push_rows(t->co, r);
      n = 1;
    } else {
      const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
      push_pgerr(t->co, primary ? primary : r ? PQresultErrorMessage(r) : "no result");
      n = 2;
    }
  } else if (c->lease && j->kind == J_RUN) {   /* cancelled inside a transaction */
    c->lease->c = NULL;
    c->lease = NULL;
    c->dirty = 1;
  }
  if (r) PQclear(r);
  h->refs++;
  job_free(j);
  c->waking = 1;
  if (t) ml_task_wake(t, n);
  c->waking = 0;
  /* the woken task may have used c again, released its lease or closed the handle */
  if (c->drop_later) {
    c->drop_later = 0;
    if (c->lease) c->lease->c = NULL;
    c->lease = NULL;
    conn_drop(c);
  } else if (c->state == C_IDLE && !c->lease && !c->cancelling) {
    conn_available(c);
  }
  handle_unref(h);
}

/* Keeps r as c's result: the first error wins, else the last result. */
static void keep_result(conn_t *c, PGresult *r) {
  if (c->res && (PQresultStatus(c->res) == PGRES_FATAL_ERROR ||
                 PQresultStatus(c->res) == PGRES_BAD_RESPONSE)) {
    PQclear(r);
    return;
  }
  if (c->res) PQclear(c->res);
  c->res = r;
}

/* The last Sync of a pipelined job arrived. A prepared statement that failed because it
 * went out of date (its plan's result type changed: 0A000; or it vanished: 26000, after
 * a DEALLOCATE ALL or DISCARD ALL) is prepared again, and the job sent again once when no
 * transaction block was open (the failed statement changed nothing). */
static void pipeline_done(conn_t *c) {
  job_t *j = c->job;
  if (!PQexitPipelineMode(c->pg)) {
    conn_broken(c, "cannot leave pipeline mode");
    return;
  }
  PGresult *r = c->res;
  const char *code = r && PQresultStatus(r) == PGRES_FATAL_ERROR
                         ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  int stale = code && strcmp(code, "0A000") == 0, gone = code && strcmp(code, "26000") == 0;
  if (j->stmt && j->stmt->ready && (stale || gone)) {
    if (stale) j->stmt->stale = 1;
    else ml_db_pg_stmt_forget(&c->stmts, j->stmt);
    j->stmt = NULL;
    if (j->hit && !j->retried && j->task && PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
      j->retried = 1;
      PQclear(r);
      c->res = NULL;
      c->state = C_IDLE;
      c->job = NULL;
      if (job_send(c, j)) send_failed(c, j);
      return;
    }
  }
  query_done(c);
}

static void connect_step(conn_t *c) {
  PostgresPollingStatusType r = PQconnectPoll(c->pg);
  if (r == PGRES_POLLING_FAILED) {
    conn_broken(c, "connection failed");
    return;
  }
  if (r != PGRES_POLLING_OK) {
    if (poll_want(c, r == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE))
      conn_broken(c, "cannot watch the connection");
    return;
  }
  PQsetnonblocking(c->pg, 1);
  c->state = C_IDLE;
  poll_idle(c);
  job_t *j = c->job;
  c->job = NULL;
  if (j) conn_assign(c, j);
  else conn_available(c);
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  conn_t *c = p->data;
  if (!c) return;
  if (c->state == C_CONNECTING) {
    connect_step(c);
    return;
  }
  if (c->state == C_IDLE) {   /* the server spoke first: keep a notice, drop at the end */
    if (status < 0 || !PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) {
      conn_drop(c);
      return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg))) PQfreemem(n);
    return;
  }
  if (status < 0) {
    conn_broken(c, uv_strerror(status));
    return;
  }
  if (events & UV_WRITABLE) {
    int f = PQflush(c->pg);
    if (f < 0 || (f == 0 && poll_want(c, UV_READABLE))) {
      conn_broken(c, "cannot send");
      return;
    }
  }
  if (!(events & UV_READABLE)) return;
  if (!PQconsumeInput(c->pg)) {
    conn_broken(c, "connection lost");
    return;
  }
  while (!PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    job_t *j = c->job;
    if (!r) {
      if (!j->pipeline) {
        query_done(c);
        return;
      }
      /* the end of one step's results; two in a row would mean a lost Sync */
      if (++j->nulls > 1) {
        conn_broken(c, "lost track of the pipeline");
        return;
      }
      continue;
    }
    j->nulls = 0;
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      PQclear(r);
      conn_broken(c, "COPY is not supported");
      return;
    }
    if (!j->pipeline) {
      keep_result(c, r);
      continue;
    }
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      if (--j->syncs == 0) {
        pipeline_done(c);
        return;
      }
      continue;
    }
    int kind = j->step < j->nsteps ? j->steps[j->step++] : S_IGNORE;
    if (kind == S_PREPARE) {
      if (st == PGRES_COMMAND_OK) {
        j->stmt->ready = 1;
        PQclear(r);
      } else {   /* the server has no such statement: forget it */
        ml_db_pg_stmt_forget(&c->stmts, j->stmt);
        j->stmt = NULL;
        keep_result(c, r);
      }
    } else if (kind == S_EXEC && st != PGRES_PIPELINE_ABORTED) {
      keep_result(c, r);
    } else {
      PQclear(r);
    }
  }
}

/* --- cancelling ------------------------------------------------------------------------ */


static void cancel_work_cb(uv_work_t *req) {
  cancel_t *k = req->data;
  char err[256];
  PQcancel(k->cancel, err, sizeof err);
}

/* The cancel request reached the server (or failed): only now may the connection serve
 * another query, or that query could be the one cancelled. */
static void cancel_after_cb(uv_work_t *req, int status) {
  (void)status;
  cancel_t *k = req->data;
  conn_t *c = k->c;
  PQfreeCancel(k->cancel);
  free(k);
  if (!c) return;
  c->cancelling = NULL;
  if (c->state == C_IDLE && !c->job && !c->lease && !c->waking) conn_available(c);
}

/* The task no longer waits: a queued job goes; a running query is cancelled on the
 * server and its connection drained (query_done discards the result). */
static void job_cancel(ml_task_t *t) {
  job_t *j = t->wait;
  j->task = NULL;
  conn_t *c = j->c;
  if (!c) {
    fifo_unlink(j->h, j);
    job_free(j);
    return;
  }
  if (c->state == C_CONNECTING) {   /* the connection comes up for the next one */
    c->job = NULL;
    job_free(j);
    return;
  }
  PGcancel *pc = PQgetCancel(c->pg);
  if (!pc) return;
  cancel_t *k = malloc(sizeof *k);
  if (!k) abort();
  k->cancel = pc;
  k->c = c;
  c->cancelling = k;
  k->req.data = k;
  uv_queue_work(c->h->loop, &k->req, cancel_work_cb, cancel_after_cb);
}

static void handle_close(handle_t *h) {
  if (h->closed) return;
  h->closed = 1;
  while (h->head) {
    job_t *j = h->head;
    fifo_unlink(h, j);
    job_fail(j, "closed");
  }
  conn_t *c = h->conns;
  while (c) {
    conn_t *next = c->next;
    if (c->lease) {
      c->lease->c = NULL;
      c->lease = NULL;
    }
    if (c->state == C_IDLE) conn_drop(c);   /* the others go when their job ends */
    c = next;
  }
}

/* --- Lua ------------------------------------------------------------------------------- */

static handle_t *check_handle(lua_State *L) {
  handle_t **ud = luaL_checkudata(L, 1, HANDLE_MT);
  if (!*ud) luaL_error(L, "the database handle is closed");
  return *ud;
}

/* db_pg_open(url, connections) -> handle | nil, err. Connects nothing yet. */
static int l_open(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  int size = (int)luaL_optinteger(L, 2, DEFAULT_CONNS);
  luaL_argcheck(L, size >= 1 && size <= 1000, 2, "expected 1 to 1000 connections");
  ml_task_t *t = ml_task_current(L);
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(url, &err);
  if (!opts) {
    push_pgerr(L, err ? err : "invalid connection string");
    PQfreemem(err);
    return 2;
  }
  PQconninfoFree(opts);
  handle_t *h = calloc(1, sizeof *h);
  if (!h) abort();
  h->loop = t->sched->loop;
  h->conninfo = strdup(url);
  h->size = size;
  h->refs = 1;
  handle_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = h;
  luaL_getmetatable(L, HANDLE_MT);
  lua_setmetatable(L, -2);
  return 1;
}


/* No idle connection for j: open one for it (up to the pool size) or queue it, then wait.
 * Returns nil, err at once when a connection cannot even be started. */
static int wait_for_conn(lua_State *L, handle_t *h, job_t *j, ml_task_t *t) {
  const char *err;
  if (h->nconns < h->size) {
    if (!conn_new(h, j, &err)) {
      push_pgerr(L, err);
      job_free(j);
      return 2;
    }
  } else {
    fifo_push(h, j);
  }
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
  if (l && l->c->state != C_IDLE)
    return luaL_error(L, "a transaction runs one statement at a time");
  int n, want;
  ml_db_value_t *params = ml_db_value_params(L, 5, &n);
  int multi;
  char *pgsql = ml_db_pg_sql_rewrite(sql, len, &want, &multi);
  if (want != n) {
    free(pgsql);
    ml_db_value_free(params, n);
    lua_pushnil(L);
    lua_pushfstring(L, "expected %d parameter(s), got %d", want, n);
    return 2;
  }
  job_t *j = job_new(h, J_RUN);
  j->mode = mode;
  j->sql = pgsql;
  j->multi = n == 0 && multi;
  j->nparams = n;
  j->values = ml_db_pg_value_params(params, n);
  ml_db_value_free(params, n);
  j->task = t;
  conn_t *c = l ? l->c : conn_idle(h);
  if (c) {
    if (job_send(c, j)) {   /* c is in no state to serve anyone (a lease's ends) */
      push_pgerr(L, PQerrorMessage(c->pg));
      conn_drop(c);
      job_free(j);
      return 2;
    }
    return ml_task_wait(L, t, job_cancel, j);
  }
  return wait_for_conn(L, h, j, t);
}

/* h:acquire() -> lease | nil, err: a connection of its own, for a transaction */
static int l_acquire(lua_State *L) {
  handle_t *h = check_handle(L);
  ml_task_t *t = ml_task_current(L);
  conn_t *c = conn_idle(h);
  if (c) {
    push_lease(L, c);
    return 1;
  }
  job_t *j = job_new(h, J_ACQUIRE);
  j->task = t;
  return wait_for_conn(L, h, j, t);
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
  conn_t *c = l->c;
  if (!c) return 0;
  l->c = NULL;
  c->lease = NULL;
  c->dirty = !lua_toboolean(L, 2);
  if (c->state == C_IDLE) conn_available(c);
  return 0;
}

/* A lease the program dropped. From a finalizer nobody may be woken, so the connection
 * gets a ROLLBACK (harmless outside a transaction) whose end serves the waiters. */
static int l_lease_gc(lua_State *L) {
  lease_t *l = luaL_checkudata(L, 1, LEASE_MT);
  conn_t *c = l->c;
  handle_t *h = l->h;
  l->h = NULL;
  if (c) {
    l->c = NULL;
    c->lease = NULL;
    c->dirty = 1;
    if (c->state == C_IDLE) {
      PGTransactionStatusType tx = PQtransactionStatus(c->pg);
      job_t *j = NULL;
      if (!h->closed && (tx == PQTRANS_IDLE || tx == PQTRANS_INTRANS || tx == PQTRANS_INERROR)) {
        c->dirty = 0;
        j = job_new(h, J_ROLLBACK);
        j->sql = strdup("ROLLBACK");
        if (job_send(c, j)) {
          job_free(j);
          j = NULL;
        }
      }
      if (!j) conn_drop(c);
    }
  }
  if (h) handle_unref(h);
  return 0;
}

void ml_db_pg_open(lua_State *L) {
  static const ml_db_driver_t driver = {HANDLE_MT, LEASE_MT, "db_pg_open", l_open, l_run,
                                         l_acquire, l_close, l_release, l_lease_gc};
  ml_db_register(L, &driver);
}
