/* The scheduler (ml_sched_*) and its tasks (ml_task_*): the coroutines moonlet runs, and
 * the one way primitives wait.
 *
 * Every Lua state has a scheduler (ml_sched_t) bound to a libuv loop: the main state to
 * the server's loop, a pool thread's state to a private loop of that thread. A task is a
 * coroutine the scheduler resumes. A primitive (sleep, http, db, ...) starts a libuv
 * operation whose callback pushes results on t->co and calls ml_task_wake, then returns
 * ml_task_wait(L, t, cancel):
 *   - in a coroutine task this yields; the wake resumes the coroutine with the results;
 *   - in a blocking task (a pool thread's handler, app loading, `moonlet test`) it runs
 *     the loop until the wake, then returns the results: same API, the thread blocks.
 * While a task waits, t->cancel undoes the operation (its callback must then never call
 * ml_task_wake). Cancelling a task cancels its children (gather, timeout). */
#ifndef ML_SCHED_H
#define ML_SCHED_H
#include <lua.h>
#include <stdint.h>
#include <uv.h>

typedef struct ml_sched_s ml_sched_t;
typedef struct ml_task_s ml_task_t;

typedef void (*ml_cancel_fn)(ml_task_t *t);

/* Something a primitive keeps per scheduler on its loop (the HTTP client's idle
 * connections): ml_sched_close calls fn(s, data) so it closes its handles in time. */
typedef struct ml_sched_hook_s {
  void (*fn)(ml_sched_t *s, void *data);
  void *data;
  struct ml_sched_hook_s *next;
} ml_sched_hook_t;

/* The coroutine ended: status 0 with its results on t->co, or an error message on top.
 * The callee releases t (ml_task_release) — at once or later. */
typedef void (*ml_done_fn)(ml_task_t *t, int status);

struct ml_task_s {
  ml_sched_t *sched;
  lua_State *co;             /* the coroutine (anchored by co_ref), or the waiting thread */
  int co_ref;
  int blocking;              /* waits by running the loop instead of yielding */
  int woken;                 /* blocking: number of results pushed, -1 while waiting */
  ml_cancel_fn cancel;       /* set while waiting */
  void *wait;                /* the primitive's state while waiting */
  uv_timer_t *timer;         /* timeout, a stream's turn: made on first use
                              * (ml_task_timer; most tasks never need one), kept for reuse */
  int sleep_slot;            /* sleep.c: its place in sched->sleepers + 1, 0 when awake */
  ml_done_fn on_done;
  void *owner;               /* what on_done needs (a connection, a gather, ...) */
  ml_task_t *parent;         /* gather/timeout: the waiting task */
  int index;                 /* gather: position of this child */
  int sync_results;          /* timeout: results a child left before its parent waited */
  unsigned gen;              /* changes on release: stale lightuserdata references notice */
  int route;                 /* route index for logs, -1 if none */
  int background;            /* spawned by a request (or by such a task): s->background */
  int released;
  ml_task_t *next_free, *next_all;
};

/* What watches the resumes of a scheduler (the watchdog registers one): begin runs just
 * before an outermost resume (a task started from the loop, not from another task), end
 * just after it, both on the loop's thread. They must be cheap: they are on every request. */
typedef struct ml_sched_monitor_s ml_sched_monitor_t;
struct ml_sched_monitor_s {
  void (*begin)(ml_sched_monitor_t *m, ml_sched_t *s, int route);
  void (*end)(ml_sched_monitor_t *m, ml_sched_t *s, int route);
};

struct ml_sched_s {
  uv_loop_t *loop;
  lua_State *L;              /* the state's main thread */
  ml_task_t *current;        /* being resumed, NULL between resumes */
  ml_task_t *free_tasks;
  ml_task_t *all_tasks;
  ml_task_t root;            /* blocking pseudo-task for code that runs outside any task */
  uv_timer_t root_timer;     /* root's timer: the scheduler's last handle to close */
  int live;
  void *owner;               /* what owns this scheduler (the app state), NULL if none */
  void (*closed_cb)(ml_sched_t *s);   /* after ml_sched_close, when its handles are closed */
  int closed;                /* ml_sched_close ran */
  int handles_closed;        /* ... and its last handle has closed */
  /* where pooled routes go (workers: the pool, AnyIO's thread limiter) and run_in_pool's
   * jobs (executor, as an asyncio loop has its default executor), in loop states; and
   * whether this state is a thread's of either */
  struct ml_workers_s *workers;
  struct ml_workers_s *executor;
  int in_pool;               /* 1 in a pool or executor thread's state */
  int no_wait;               /* the loop is an embedder's: code outside any task (app.lua
                              * at load time) may not wait, which would run it */
  ml_sched_monitor_t *monitor;    /* NULL: nobody watches */
  /* moonlet.spawn's tasks that a request started, directly or through another such task,
   * still running: a graceful stop waits for them (tasks spawned at load or by a startup
   * hook are the app's own, and are not counted). background_idle_cb, when set, runs when
   * the count drops to 0. */
  int background;
  void (*background_idle_cb)(ml_sched_t *s);
  void *background_idle_arg;      /* for background_idle_cb */
  ml_sched_hook_t *close_hooks;   /* see ml_sched_on_close */
  /* moonlet.sleep's sleeping tasks (sleep.c): one timer for all of them, due at the
   * earliest deadline, and a binary heap of them by deadline */
  uv_timer_t sleep_timer;
  struct ml_sleeper_s *sleepers;
  int nsleepers, sleepers_cap;
  uint64_t sleep_seq;        /* the order of the sleep calls */
  int sleep_firing;          /* waking the due sleepers now */
};

/* Binds a scheduler to L (registry) and loop. */
void ml_sched_init(ml_sched_t *s, lua_State *L, uv_loop_t *loop);
/* Cancels every waiting task and closes the task handles on the loop (run it afterwards);
 * s->closed_cb runs when the last is closed: only then may s's memory go. Calling it again
 * does nothing. */
void ml_sched_close(ml_sched_t *s);
ml_sched_t *ml_sched_of(lua_State *L);
/* Makes s the scheduler of its state again (ml_sched_of): a state that holds several
 * (the spec runner's and the test clients' app states, see test_client.c) switches. */
void ml_sched_bind(ml_sched_t *s);
/* Has ml_sched_close call h->fn(s, h->data) after it cancelled the waiting tasks and before
 * it closes its last handle. h is the caller's and must live until then. */
void ml_sched_on_close(ml_sched_t *s, ml_sched_hook_t *h);

/* t's timer (its data is t), made on first use. */
uv_timer_t *ml_task_timer(ml_task_t *t);
/* Stops t's timer, if it has one. */
void ml_task_timer_stop(ml_task_t *t);

/* A new coroutine task with fn (the value at fn_idx of L) pushed on its stack; the caller
 * pushes arguments on t->co and calls ml_task_resume. */
ml_task_t *ml_task_new(ml_sched_t *s, ml_done_fn on_done, void *owner);
/* Runs t until it waits or ends. nargs values are on t->co. */
void ml_task_resume(ml_task_t *t, int nargs);
/* The task L runs in; raises a Lua error when L is a coroutine moonlet does not run. */
ml_task_t *ml_task_current(lua_State *L);
/* See the top comment. Returns what a C function returns. */
int ml_task_wait(lua_State *L, ml_task_t *t, ml_cancel_fn cancel, void *wait);
/* Resumes (or unblocks) t with nresults values already pushed on t->co. */
void ml_task_wake(ml_task_t *t, int nresults);
/* Cancels what t waits on and, recursively, its children. t is not released. */
void ml_task_cancel(ml_task_t *t);
/* Hands t back for reuse (its coroutine too when it ended normally). */
void ml_task_release(ml_task_t *t, int reusable);

/* A coroutine task running fn(...) (fn and its nargs arguments on top of L, popped) under
 * an xpcall trampoline: it ends with (true, results...) or (false, error with traceback).
 * The caller resumes it with nargs + 1 values. */
ml_task_t *ml_task_child(lua_State *L, ml_sched_t *s, int nargs, ml_done_fn done,
                         void *owner);
/* Runs the function under nargs arguments on top of L (popped) as a detached task of s
 * (moonlet.spawn): it starts at once; its errors are logged with a traceback. With
 * `background`, a request's work: s->background counts it and a graceful stop waits for it. */
void ml_spawn(lua_State *L, ml_sched_t *s, int nargs, int background);
/* The argument at idx as whole milliseconds: a number of seconds from 0 to 1e9 (raises). */
uint64_t ml_sched_check_ms(lua_State *L, int idx);

/* sleep.c's part of the scheduler: its timer, opened by ml_sched_init and closed by
 * ml_sched_close. */
void ml_sleep_init(ml_sched_t *s);
void ml_sleep_close(ml_sched_t *s);

/* The primitives built on the scheduler alone sit beside it (sleep.c, spawn.c, gather.c,
 * timeout.c); their ml_*_open functions, and ml_sched_open's, are listed in core.h. */
#endif
