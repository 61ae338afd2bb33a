/* PostgreSQL for moonlet.db: a driver under the pool core (see db.h).
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
 * protocol, uncached. moonlet's `?` placeholders become $n first (db_pg_sql.c).
 *
 * Pipelining (a handle opened with pipeline > 1, db.h's append): a statement that cannot
 * change the transaction state (db_pg_sql.c's pipelinable) and whose statement a busy
 * connection has prepared goes behind that connection's statements when they cannot
 * change it either (c->safe): Bind/Execute by name and a Sync of its own, so an error ends
 * at its Sync and the others run; except that the read-only ones (db_pg_sql.c's readonly)
 * that one loop turn sends behind c form a batch with one Sync, sent by a uv_prepare when
 * the turn's callbacks have run: one write, one flush of the server's for all of them. An
 * error in a batch aborts the statements after it (they never ran: each is sent again
 * with a Sync of its own) and rolls back nothing but reads. The connection stays in
 * pipeline mode until its last job ended; results are read in order, each job's up to its
 * last Sync (a batch's others: up to their own results). A pipelined job is never
 * cancelled on the server (PQcancel would stop whatever runs, maybe another's): its
 * outcome is thrown away when it ends. One whose prepared statement went out of date is
 * sent again unnamed, behind the others.
 *
 * Connections open when needed. An idle connection whose socket turned readable (the
 * server went away or restarted) is dropped and replaced before use; one that breaks
 * mid-query fails that query with nil, err and is dropped. Cancelling a running query
 * sends a cancel request (PQcancel, on libuv's threadpool since it connects and blocks)
 * and holds the connection (ml_db_conn_hold) until the request has landed, so that it
 * cannot cancel the next query.
 *
 * Ownership: a connection's PGresult so far (res) moves to its job when the query ends;
 * the job frees it. A cancel request outlives its connection if it must (c is then NULL). */
#include "db_pg.h"
#include "core.h"
#include "mem.h"
#include "db_pg_sql.h"
#include "db_pg_stmt.h"
#include "db_pg_value.h"
#include "log.h"
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define STMT_MAX_SQL 8192    /* longer statements run unnamed, never cached */

enum { S_IGNORE, S_PREPARE, S_EXEC };   /* what a pipelined result answers */

typedef struct cancel_s cancel_t;
typedef struct job_s job_t;

typedef struct {
  ml_db_conn_t base;
  PGconn *pg;
  uv_poll_t *poll;           /* from connecting to disconnect; freed by its close callback */
  int fd;
  int events;                /* what poll watches */
  PGresult *res;             /* busy: the first error, else the last result so far */
  cancel_t *cancelling;      /* a PQcancel on its way */
  int safe;                  /* busy with statements that cannot open a transaction */
  job_t *open;               /* the last of a batch sent this loop turn, awaiting its Sync */
  uv_prepare_t *syncer;      /* sends that Sync before the loop waits; freed on close */
  ml_db_pg_stmt_cache_t stmts;   /* what it has prepared */
} conn_t;

/* A PQcancel running on libuv's threadpool (it blocks). */
struct cancel_s {
  uv_work_t req;
  PGcancel *cancel;
  conn_t *c;                 /* NULL once the connection was dropped */
};

struct job_s {
  ml_db_job_t base;          /* base.sql has $n placeholders */
  uint32_t hash;             /* of sql */
  int multi;                 /* several commands: the simple query protocol */
  char **values;             /* text parameters, NULL for NULL */
  PGresult *res;             /* the outcome, once the query ended */
  /* what job_send sent: in pipeline mode, steps[] says what each result answers */
  int pipeline, syncs, nsteps, step, nulls;
  unsigned char steps[4];
  ml_db_pg_stmt_t *stmt;     /* the prepared statement it runs (NULL: unnamed) */
  int hit;                   /* stmt was prepared by an earlier job */
  int retried;               /* already re-prepared once */
  int aborted;               /* a statement before it in its batch failed: it never ran */
};

static void poll_cb(uv_poll_t *p, int status, int events);

/* Server notices (VACUUM's warnings, "there is no transaction in progress") go to the
 * log at debug level, not to stderr. */
static void notice_cb(void *arg, const char *message) {
  (void)arg;
  size_t n = strlen(message);
  while (n && message[n - 1] == '\n') n--;
  ml_log(ML_LOG_DEBUG, "postgres: %.*s", (int)n, message);
}

/* libpq's messages end with a newline and may span lines: Lua gets the first line. */
static size_t first_line(const char **msg) {
  if (!*msg || !**msg) *msg = "connection failed";
  return strcspn(*msg, "\n");
}

static void copy_first_line(char *err, const char *msg) {
  size_t n = first_line(&msg);
  snprintf(err, ML_DB_ERRLEN, "%.*s", (int)n, msg);
}

static int push_first_line(lua_State *L, const char *msg) {
  size_t n = first_line(&msg);
  lua_pushnil(L);
  lua_pushlstring(L, msg, n);
  return 2;
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
    c->poll = ml_xmalloc(sizeof *c->poll);
    if (uv_poll_init(c->base.db->loop, c->poll, fd)) {
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
 * able to run dry). Without a watcher drv_alive still catches a dead connection. */
static void poll_idle(conn_t *c) {
  if (poll_want(c, UV_READABLE)) poll_stop(c);
  else uv_unref((uv_handle_t *)c->poll);
}

/* The connection broke (or never came up): its job fails with libpq's message, or why. */
static void conn_broken(conn_t *c, const char *why) {
  char msg[ML_DB_ERRLEN];
  copy_first_line(msg, *PQerrorMessage(c->pg) ? PQerrorMessage(c->pg) : why);
  ml_db_conn_failed(&c->base, msg);
}

/* --- sending --------------------------------------------------------------------------- */

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
  const char *sql = j->base.sql;
  int nparams = j->base.nparams;
  if (!PQenterPipelineMode(pg)) return 0;
  j->pipeline = 1;
  PGTransactionStatusType tx = PQtransactionStatus(pg);
  if (!j->hash) j->hash = ml_db_pg_stmt_hash(sql);
  ml_db_pg_stmt_t *s = ml_db_pg_stmt_find(&c->stmts, sql, j->hash);
  if (s && s->ready && !s->stale) {
    ml_db_pg_stmt_touch(&c->stmts, s);
    j->hit = 1;
  } else if (tx == PQTRANS_INERROR || (s && tx != PQTRANS_IDLE) ||
             (!s && (strlen(sql) > STMT_MAX_SQL ||
                     (ml_db_pg_stmt_full(&c->stmts) && tx != PQTRANS_IDLE)))) {
    s = NULL;   /* unnamed */
  } else {
    if (s) {   /* its plan went bad: replace it */
      if (s->stale && !pipe_deallocate(c, j, s)) return 0;
      s->stale = s->ready = 0;
      ml_db_pg_stmt_touch(&c->stmts, s);
    } else {
      if (ml_db_pg_stmt_full(&c->stmts)) {   /* make room: the least recently used goes */
        ml_db_pg_stmt_t *old = ml_db_pg_stmt_oldest(&c->stmts);
        int ok = pipe_deallocate(c, j, old);
        ml_db_pg_stmt_forget(&c->stmts, old);
        if (!ok) return 0;
      }
      s = ml_db_pg_stmt_add(&c->stmts, sql, j->hash);
      s->readonly = ml_db_pg_sql_readonly(sql);
    }
    j->stmt = s;
    if (!pipe_step(j, PQsendPrepare(pg, s->name, sql, nparams, NULL), S_PREPARE)) return 0;
  }
  j->stmt = s;
  int ok;
  if (s) {
    ok = PQsendQueryPrepared(pg, s->name, nparams, (const char *const *)j->values, NULL, NULL, 0);
  } else {
    ok = PQsendQueryParams(pg, sql, nparams, NULL, (const char *const *)j->values, NULL, NULL, 0);
  }
  if (!pipe_step(j, ok, S_EXEC) || !PQpipelineSync(pg)) return 0;
  j->syncs++;
  return 1;
}

static void job_reset(job_t *j) {
  j->pipeline = j->syncs = j->nsteps = j->step = j->nulls = j->hit = j->aborted = 0;
  j->stmt = NULL;
}

/* Sends what libpq holds, and watches for the results (and for room to send the rest). */
static int flush_watch(conn_t *c) {
  int f = PQflush(c->pg);
  return f < 0 || poll_want(c, f ? UV_READABLE | UV_WRITABLE : UV_READABLE) ? -1 : 0;
}

/* Sends j's statement on idle c. Returns 0, or -1 (c is then in no state to serve anyone). */
static int job_send(conn_t *c, job_t *j) {
  job_reset(j);
  c->safe = j->base.kind == ML_DB_RUN && !j->multi && ml_db_pg_sql_pipelinable(j->base.sql) &&
            PQtransactionStatus(c->pg) == PQTRANS_IDLE;
  int ok = j->multi ? PQsendQuery(c->pg, j->base.sql) : send_pipeline(c, j);
  if (!ok) {
    if (j->stmt && !j->stmt->ready) ml_db_pg_stmt_forget(&c->stmts, j->stmt);
    j->stmt = NULL;
    return -1;
  }
  return flush_watch(c);
}

/* Ends c's open batch: its Sync (one flight for all its statements), owned by its last. */
static int batch_close(conn_t *c) {
  job_t *last = c->open;
  if (!last) return 0;
  c->open = NULL;
  if (c->syncer) uv_prepare_stop(c->syncer);
  if (!PQpipelineSync(c->pg)) return -1;
  last->syncs++;
  return flush_watch(c);   /* PQpipelineSync flushed already (libpq < 17) */
}

static void syncer_cb(uv_prepare_t *h) {
  conn_t *c = h->data;
  if (batch_close(c)) conn_broken(c, "cannot send");
}

static void syncer_closed_cb(uv_handle_t *h) { free(h); }

/* Sends j behind the jobs of c, in pipeline mode: by name when s (ready) is given, else
 * unnamed. With a Sync of its own (so that an error ends there and the others run) unless
 * batch: then it joins c's open batch, whose Sync goes when the loop turn's callbacks have
 * run (uv_prepare), so that the statements of a turn travel in one flight and the server
 * answers them in one. 0, or -1 (c is in no state to serve anyone). */
static int send_behind(conn_t *c, job_t *j, ml_db_pg_stmt_t *s, int batch) {
  job_reset(j);
  j->pipeline = 1;
  j->stmt = s;
  j->hit = s != NULL;
  if (!batch && batch_close(c)) return -1;
  int n = j->base.nparams, ok;
  const char *const *v = (const char *const *)j->values;
  if (s) ok = PQsendQueryPrepared(c->pg, s->name, n, v, NULL, NULL, 0);
  else ok = PQsendQueryParams(c->pg, j->base.sql, n, NULL, v, NULL, NULL, 0);
  if (!pipe_step(j, ok, S_EXEC)) return -1;
  if (batch) {
    if (!c->syncer) {
      c->syncer = ml_xmalloc(sizeof *c->syncer);
      uv_prepare_init(c->base.db->loop, c->syncer);
      c->syncer->data = c;
      uv_unref((uv_handle_t *)c->syncer);   /* the busy connection's poll keeps the loop */
    }
    if (!c->open) uv_prepare_start(c->syncer, syncer_cb);
    c->open = j;
    return 0;
  }
  c->open = j;   /* a batch of one, closed at once */
  return batch_close(c);
}

/* --- results --------------------------------------------------------------------------- */

/* The query on c ended (PQgetResult gave NULL): its result goes to the job, and db.c
 * hands it over. Returns 1 when c lives on, busy: results may follow. */
static int query_done(conn_t *c) {
  job_t *j = (job_t *)c->base.job;
  j->res = c->res;
  c->res = NULL;
  if (c->base.njobs == 1) poll_idle(c);
  return ml_db_job_done(&c->base) && c->base.state == ML_DB_BUSY;
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
 * transaction block was open (the failed statement changed nothing); behind other jobs,
 * it is sent unnamed, and the statement prepared again by the next job on an idle c.
 * Returns 1 when c lives on, busy: results may follow. */
static int pipeline_done(conn_t *c) {
  job_t *j = (job_t *)c->base.job;
  int alone = c->base.njobs == 1;
  if (alone && !PQexitPipelineMode(c->pg)) {
    conn_broken(c, "cannot leave pipeline mode");
    return 0;
  }
  if (j->aborted && !c->res && j->base.task) {   /* it never ran: again, on its own */
    ml_db_pg_stmt_t *s = j->stmt && j->stmt->ready && !j->stmt->stale ? j->stmt : NULL;
    if (alone ? job_send(c, j) : send_behind(c, j, s, 0)) {
      conn_broken(c, NULL);
      return 0;
    }
    ml_db_job_requeue(&c->base);
    return 1;
  }
  PGresult *r = c->res;
  const char *code = r && PQresultStatus(r) == PGRES_FATAL_ERROR
                         ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  int stale = code && strcmp(code, "0A000") == 0, gone = code && strcmp(code, "26000") == 0;
  if (j->stmt && j->stmt->ready && (stale || gone)) {
    if (stale || !alone) j->stmt->stale = 1;   /* jobs behind may point to it */
    else ml_db_pg_stmt_forget(&c->stmts, j->stmt);
    j->stmt = NULL;
    /* behind others, c->safe: no transaction block can be open */
    if (j->hit && !j->retried && j->base.task &&
        (!alone || PQtransactionStatus(c->pg) == PQTRANS_IDLE)) {
      j->retried = 1;
      PQclear(r);
      c->res = NULL;
      if (alone ? job_send(c, j) : send_behind(c, j, NULL, 0)) {
        conn_broken(c, NULL);
        return 0;
      }
      ml_db_job_requeue(&c->base);
      return 1;
    }
  }
  return query_done(c);
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
  poll_idle(c);
  ml_db_conn_ready(&c->base);
}

/* Reads what a running query's results, one Sync at a time in pipeline mode. */
static void read_results(conn_t *c) {
  while (!PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    job_t *j = (job_t *)c->base.job;
    if (!r) {
      if (!j->pipeline) {
        if (!query_done(c)) return;
        continue;
      }
      /* the end of one step's results; two in a row would mean a lost Sync */
      if (++j->nulls > 1) {
        conn_broken(c, "lost track of the pipeline");
        return;
      }
      /* a batch's statement before its last: it ends here, the Sync is its last's. The
       * last's results can only come before its Sync went if the server flushed them
       * early (it does not: what ends a statement waits in its buffer for the Sync); if
       * they did, that Sync ends it (batch_close counts on it) */
      if (j->syncs == 0 && j->step == j->nsteps) {
        if (j == c->open) return;
        if (!pipeline_done(c)) return;
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
      if (--j->syncs == 0 && !pipeline_done(c)) return;
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
      if (kind == S_EXEC) j->aborted = 1;
      PQclear(r);
    }
  }
}

static void poll_cb(uv_poll_t *p, int status, int events) {
  conn_t *c = p->data;
  if (!c) return;
  if (c->base.state == ML_DB_CONNECTING) {
    connect_step(c);
    return;
  }
  if (c->base.state == ML_DB_IDLE) {   /* the server spoke first: keep a notice, drop at the end */
    if (status < 0 || !PQconsumeInput(c->pg) || PQstatus(c->pg) != CONNECTION_OK) {
      ml_db_conn_failed(&c->base, NULL);
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
  read_results(c);
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
  ml_db_conn_unhold(&c->base);
}

/* --- the driver (db.h) ----------------------------------------------------------------- */

static int drv_init(ml_db_t *db, char *err) {
  char *msg = NULL;
  PQconninfoOption *opts = PQconninfoParse(db->target, &msg);
  if (!opts) {
    copy_first_line(err, msg ? msg : "invalid connection string");
    PQfreemem(msg);
    return -1;
  }
  PQconninfoFree(opts);
  return 0;
}

static int drv_connect(ml_db_conn_t *b, char *err) {
  conn_t *c = (conn_t *)b;
  c->pg = ml_oom_check(PQconnectStart(b->db->target));   /* NULL: libpq is out of memory */
  PQsetNoticeProcessor(c->pg, notice_cb, NULL);
  if (PQstatus(c->pg) != CONNECTION_BAD && poll_want(c, UV_WRITABLE) == 0) return 0;
  copy_first_line(err, PQerrorMessage(c->pg));
  poll_stop(c);
  PQfinish(c->pg);
  return -1;
}

static void drv_disconnect(ml_db_conn_t *b) {
  conn_t *c = (conn_t *)b;
  if (c->cancelling) c->cancelling->c = NULL;
  poll_stop(c);
  c->open = NULL;
  if (c->syncer) uv_close((uv_handle_t *)c->syncer, syncer_closed_cb);
  c->syncer = NULL;
  if (c->res) PQclear(c->res);
  PQfinish(c->pg);
  ml_db_pg_stmt_clear(&c->stmts);
}

/* An idle connection is alive when its socket has nothing to say: the server only
 * speaks first to end it (shutdown, restart, admin kill). */
static int drv_alive(ml_db_conn_t *b) {
  PGconn *pg = ((conn_t *)b)->pg;
  if (PQstatus(pg) != CONNECTION_OK) return 0;
  struct pollfd pfd = {PQsocket(pg), POLLIN, 0};
  return poll(&pfd, 1, 0) == 0;
}

static int drv_txn(ml_db_conn_t *b) {
  PGconn *pg = ((conn_t *)b)->pg;
  if (PQstatus(pg) != CONNECTION_OK) return ML_DB_TX_BROKEN;
  switch (PQtransactionStatus(pg)) {
  case PQTRANS_IDLE: return ML_DB_TX_NONE;
  case PQTRANS_INTRANS: case PQTRANS_INERROR: return ML_DB_TX_OPEN;
  default: return ML_DB_TX_BROKEN;   /* a command in progress, or unknown */
  }
}

/* `?` -> $n, and the parameters as text (their strings taken out of j->params). */
static int drv_prepare(ml_db_job_t *b, const char *sql, size_t len, char *err) {
  job_t *j = (job_t *)b;
  int want, multi;
  b->sql = ml_db_pg_sql_rewrite(sql, len, &want, &multi);
  if (want != b->nparams) {
    snprintf(err, ML_DB_ERRLEN, "expected %d parameter(s), got %d", want, b->nparams);
    return -1;
  }
  j->multi = b->nparams == 0 && multi;
  j->values = ml_db_pg_value_params(b->params, b->nparams);
  return 0;
}

static int drv_send(ml_db_conn_t *b, ml_db_job_t *j, char *err) {
  conn_t *c = (conn_t *)b;
  if (job_send(c, (job_t *)j) == 0) return 0;
  copy_first_line(err, PQerrorMessage(c->pg));
  return -1;
}

/* The query is cancelled on the server; the connection drains its results (db.c discards
 * them) and serves nobody until the request has landed. */
static void drv_cancel(ml_db_conn_t *b, ml_db_job_t *j) {
  conn_t *c = (conn_t *)b;
  if (j != b->job || b->njobs > 1) return;   /* pipelined: it runs, its outcome goes */
  PGcancel *pc = PQgetCancel(c->pg);
  if (!pc) return;
  cancel_t *k = ml_xmalloc(sizeof *k);
  k->cancel = pc;
  k->c = c;
  c->cancelling = k;
  ml_db_conn_hold(b);
  k->req.data = k;
  uv_queue_work(b->db->loop, &k->req, cancel_work_cb, cancel_after_cb);
}

static int drv_push(lua_State *L, ml_db_job_t *b) {
  job_t *j = (job_t *)b;
  PGresult *r = j->res;
  ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(r), "ROLLBACK") == 0 && b->sql &&
      strncasecmp(b->sql, "ROLLBACK", 8) != 0) {
    /* COMMIT of a transaction an earlier statement aborted: nothing was committed */
    return push_first_line(L, "transaction rolled back: a statement in it failed");
  }
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
    if (b->mode == ML_DB_EXEC) ml_db_pg_value_push_changes(L, r);
    else ml_db_pg_value_push_rows(L, r);
    return 1;
  }
  const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  return push_first_line(L, primary ? primary : r ? PQresultErrorMessage(r) : "no result");
}

/* Pipelining (db.h's append): j goes behind busy c's jobs when neither can change the
 * transaction state and c has j's statement prepared already. */
static int drv_append(ml_db_conn_t *b, ml_db_job_t *jb, char *err) {
  conn_t *c = (conn_t *)b;
  job_t *j = (job_t *)jb;
  if (!c->safe || j->multi || !ml_db_pg_sql_pipelinable(jb->sql)) return 0;
  if (!j->hash) j->hash = ml_db_pg_stmt_hash(jb->sql);
  ml_db_pg_stmt_t *s = ml_db_pg_stmt_find(&c->stmts, jb->sql, j->hash);
  if (!s || !s->ready || s->stale) return 0;
  ml_db_pg_stmt_touch(&c->stmts, s);
  if (send_behind(c, j, s, s->readonly) == 0) return 1;
  copy_first_line(err, PQerrorMessage(c->pg));
  return -1;
}

static void drv_job_free(ml_db_job_t *b) {
  job_t *j = (job_t *)b;
  if (j->values)
    for (int i = 0; i < b->nparams; i++) free(j->values[i]);
  free(j->values);
  if (j->res) PQclear(j->res);
}

const ml_db_driver_t ml_db_pg_driver = {
  .open_name = "db_pg_open", .handle_mt = "moonlet.db.pg", .lease_mt = "moonlet.db.pg.lease",
  .default_size = 10, .max_size = 1000,   /* connects nothing at open */
  .conn_size = sizeof(conn_t), .job_size = sizeof(job_t),
  .init = drv_init, .connect = drv_connect, .disconnect = drv_disconnect,
  .alive = drv_alive, .txn = drv_txn, .prepare = drv_prepare, .send = drv_send,
  .cancel = drv_cancel, .push = drv_push, .job_free = drv_job_free, .append = drv_append,
};

void ml_db_pg_open(lua_State *L) {
  ml_db_install(L, &ml_db_pg_driver);
}
