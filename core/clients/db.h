/* moonlet.db's pool core: one handle over any database, and the contract between it and a
 * driver (db_sqlite.c, db_pg.c) — as Redis's ae.c sits over ae_epoll.c.
 *
 * Lua sees one handle type per driver (lua/moonlet/db.lua wraps it):
 *   h:run(lease|nil, mode, sql, ...) -> rows | { changes, last_id } | nil, err
 *   h:acquire() -> lease | nil, err          (a connection pinned for a transaction)
 *   lease:release(clean)                     (clean: the transaction was ended by SQL)
 *   h:close()
 * run and acquire wait through the task API (task.h): they yield in a coroutine and block
 * elsewhere.
 *
 * db.c does, once for every driver: the handle and its reference count; up to `size`
 * connections, opened when needed; the FIFO of jobs waiting for one; leases; a connection
 * that a statement or a dropped lease left inside a transaction is rolled back before
 * anyone else gets it; a job whose task stops waiting leaves the FIFO or is cancelled;
 * pipelining, when the handle allows it and every connection is busy: a statement goes
 * behind the running ones of the least loaded connection (the driver's append) rather
 * than into the FIFO; the Lua bindings.
 *
 * A driver does what talks to its database, through a const ml_db_driver_t:
 *   connect     starts a new connection c: 1 when it can serve at once, 0 when it is
 *               connecting (the driver calls ml_db_conn_ready or ml_db_conn_failed later),
 *               -1 when it cannot even start.
 *   send        starts job j (a statement; ML_DB_OPEN: open the connection; ML_DB_ROLLBACK:
 *               roll back if inside a transaction) on idle connection c. When j has ended
 *               the driver calls ml_db_job_done(c), from a loop callback, never from
 *               inside send. -1: c cannot serve anyone (db.c drops it).
 *   cancel      nobody waits for job j on c any more: stop it early if possible. It
 *               still ends with ml_db_job_done (its outcome is thrown away). j may be one
 *               pipelined behind c's running job (see append).
 *   push        pushes an ended job's outcome on L and returns how many values: its
 *               result (1), nil, err (2), or nothing for an ML_DB_OPEN that worked (0).
 *   txn         whether idle connection c is inside a transaction (ML_DB_TX_*).
 *   disconnect  closes c's connection; db.c frees c.
 *   optional: init (checks the handle's target), alive (may idle c serve?), prepare (turns
 *   the SQL text into what the driver sends), job_free (frees what a driver added to j),
 *   append (pipelining, when the handle allows more than one job per connection: sends
 *   job j behind the jobs busy c runs; 1 sent, 0 j cannot go on c (nothing sent), -1 with
 *   err (c can serve no one: j, c's jobs fail, c is dropped). Its jobs end in the order they were sent, each with its own
 *   ml_db_job_done).
 * A driver extends ml_db_conn_t and ml_db_job_t by embedding them as its struct's first
 * member (conn_size, job_size say how big); db.c allocates and frees both.
 *
 * Failures: functions that can fail return -1 with a one-line message written into err
 * (ML_DB_ERRLEN bytes), which Lua receives as nil, err. */
#ifndef ML_DB_H
#define ML_DB_H
#include "db_value.h"
#include "list.h"
#include "sched.h"
#include <lua.h>
#include <stddef.h>
#include <uv.h>

#define ML_DB_ERRLEN 256
#define ML_DB_PIPELINE_MAX 64   /* the most statements pipelined on one connection */

enum { ML_DB_QUERY, ML_DB_EXEC };                               /* what h:run returns */
enum { ML_DB_OPEN, ML_DB_RUN, ML_DB_ACQUIRE, ML_DB_ROLLBACK };  /* job kinds */
enum { ML_DB_CONNECTING, ML_DB_IDLE, ML_DB_BUSY };              /* connection states */
enum { ML_DB_TX_NONE, ML_DB_TX_OPEN, ML_DB_TX_BROKEN };         /* what txn says */

typedef struct ml_db_s ml_db_t;
typedef struct ml_db_conn_s ml_db_conn_t;
typedef struct ml_db_job_s ml_db_job_t;
typedef struct ml_db_driver_s ml_db_driver_t;

struct ml_db_s {             /* a handle */
  /* read-only */
  const ml_db_driver_t *driver;
  uv_loop_t *loop;
  char *target;              /* what open was given: a path, a connection URL */
  /* public: init may lower them */
  int size;                  /* the most connections */
  int pipeline;              /* the most jobs on one connection at once (1: no pipelining) */
  /* private */
  int nconns, refs, closed;  /* refs: the Lua userdata, connections, jobs, leases */
  ml_list_t conns;           /* of ml_db_conn_t */
  ml_list_t waiting;         /* ml_db_job_t waiting for a connection, first come first */
  lua_State *L;              /* the state it belongs to (its registry) */
};

struct ml_db_conn_s {        /* a connection */
  /* read-only */
  ml_db_t *db;
  int state;                 /* ML_DB_CONNECTING, ML_DB_IDLE, ML_DB_BUSY */
  ml_db_job_t *job;          /* CONNECTING: the job it is for (or NULL); BUSY: the job
                                whose results come next */
  int njobs;                 /* BUSY: job and the ones pipelined behind it */
  /* private */
  struct ml_db_lease_s *lease;
  int dirty;                 /* roll back before it serves anyone else */
  int held;                  /* ml_db_conn_hold: serves nobody until ml_db_conn_unhold */
  int waking;                /* ml_db_job_done is waking its task: c must outlive that */
  int drop_later;            /* dropped while waking */
  int in_use;                /* counted in the metrics' in-use gauge (see conn_mark) */
  ml_list_t queue;           /* BUSY: the jobs pipelined behind job, in order */
  ml_list_t link;            /* in the handle's conns */
};

struct ml_db_job_s {         /* what a task waits for: a statement, a lease, ... */
  /* read-only */
  ml_db_t *db;
  ml_db_conn_t *conn;        /* NULL while in the FIFO */
  ml_task_t *task;           /* NULL when nobody waits (cancelled, db.c's own) */
  int kind, mode;            /* ML_DB_RUN, ...; ML_DB_QUERY or ML_DB_EXEC */
  /* public: prepare sets sql; it may take TEXT strings out of params (leaving .s NULL).
   * db.c frees both. */
  char *sql;                 /* malloc'd, NUL-terminated */
  ml_db_value_t *params;
  int nparams;
  /* private */
  int ud_ref;                /* ML_DB_OPEN: the handle's userdata, the result */
  ml_list_t link;            /* in the handle's waiting list, or its connection's queue */
};

struct ml_db_driver_s {
  const char *open_name;     /* the function installed into moonlet.core */
  const char *handle_mt, *lease_mt;   /* the metatables of its handles and leases */
  int default_size, max_size;         /* connections per handle */
  int open_connects;         /* open runs an ML_DB_OPEN job, so a bad target fails there */
  size_t conn_size, job_size;
  int (*init)(ml_db_t *db, char *err);
  int (*connect)(ml_db_conn_t *c, char *err);
  void (*disconnect)(ml_db_conn_t *c);
  int (*alive)(ml_db_conn_t *c);
  int (*txn)(ml_db_conn_t *c);
  int (*prepare)(ml_db_job_t *j, const char *sql, size_t len, char *err);
  int (*send)(ml_db_conn_t *c, ml_db_job_t *j, char *err);
  void (*cancel)(ml_db_conn_t *c, ml_db_job_t *j);
  int (*push)(lua_State *L, ml_db_job_t *j);
  void (*job_free)(ml_db_job_t *j);
  int (*append)(ml_db_conn_t *c, ml_db_job_t *j, char *err);
};

/* --- what drivers call, from loop callbacks -------------------------------------------- */

/* Connecting c came up: it serves its job, or whoever waits. */
void ml_db_conn_ready(ml_db_conn_t *c);
/* c broke (or never came up), or an idle c was found dead: its job, if any, fails with
 * msg; c is disconnected and freed. */
void ml_db_conn_failed(ml_db_conn_t *c, const char *msg);
/* c's job ended: db.c pushes its outcome (driver's push), frees it, wakes its task, then
 * makes the next pipelined job c's job, or gives c to the next user. Returns 1 while c
 * lives, 0 when it was freed. */
int ml_db_job_done(ml_db_conn_t *c);
/* c's job goes behind the others pipelined on c (the driver sent it again): the next one
 * becomes c's job. Nothing when it is alone. */
void ml_db_job_requeue(ml_db_conn_t *c);
/* Keeps idle c from serving anyone (a cancel request still on its way) until unhold. */
void ml_db_conn_hold(ml_db_conn_t *c);
void ml_db_conn_unhold(ml_db_conn_t *c);

/* Registers d's metatables and installs its open function into the table on top of the
 * stack: moonlet.core[d->open_name](target[, connections[, pipeline]]) -> handle | nil, err
 * (pipeline: the most jobs per connection, default 1; more only for drivers with append). */
void ml_db_install(lua_State *L, const ml_db_driver_t *d);
#endif
