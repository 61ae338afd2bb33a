/* The worker pool (see pool.h).
 * Locking: p->lock guards the queue, the done list, the counters and job->state /
 * job->cancelled. A job is owned by the queue, then by its thread, then by the done list,
 * then by its `done` callback (or freed by the pool when cancelled). */
#include "pool.h"
#include "app.h"
#include "copy.h"
#include "log.h"
#include "lresponse.h"
#include "lstate.h"
#include "response.h"
#include "task.h"
#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

typedef struct worker_s {
  ml_pool_t *pool;
  pthread_t thread;
  uv_loop_t loop;            /* private: primitives block on it */
  ml_app_t *app;             /* the thread's app state; NULL if it could not load */
  int cache_ref;
  int generation;            /* the code generation this state loaded (see ml_pool_reload) */
  char *load_error;          /* why the app state could not load */
  uv_async_t wake;           /* on its own loop: a job is waiting for this idle thread */
  int idle;                  /* on the pool's idle stack */
  int exited;
} worker_t;

struct ml_pool_s {
  uv_loop_t *loop;
  uv_async_t async;
  pthread_mutex_t lock;
  pthread_cond_t exit_cond;
  ml_job_t *head, *tail;     /* queued */
  ml_job_t *done;            /* finished, newest first */
  int queued, max_queue, outstanding;
  int detached;              /* jobs in flight no longer keep the loop alive */
  int size, nthreads, stopping, exited;
  worker_t **idle;           /* idle threads, most recently idle last (woken first) */
  int nidle;
  int generation;            /* bumped by ml_pool_reload: states reload before their next job */
  worker_t *workers;
  char *appdir;
};

ml_job_t *ml_job_new(int kind) {
  ml_job_t *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->kind = kind;
  return j;
}

void ml_job_free(ml_job_t *j) {
  ml_buf_free(&j->in);
  ml_request_copy_free(&j->request);
  ml_buf_free(&j->out);
  free(j);
}

/* --- the pool thread side ------------------------------------------------------------ */

/* Loads the app into the worker's own state (its loop exists). Returns 0 or -1
 * (w->load_error set). */
static int worker_init(worker_t *w) {
  char err[1024];
  w->app = ml_app_new(&w->loop, w->pool->appdir, 1, err, sizeof err);
  if (!w->app) {
    w->load_error = strdup(err);
    return -1;
  }
  lua_State *L = w->app->L;
  lua_newtable(L);   /* bytecode -> function, for run_in_pool */
  w->cache_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  return 0;
}

/* Answers 500; why (NULL if already logged) goes to the log. */
static void request_failed(ml_job_t *j, const char *why) {
  if (why) ml_log(ML_LOG_ERROR, "pool: %s", why);
  j->out.len = 0;
  ml_resp_error(&j->out, 500, "Internal Server Error", NULL, j->keepalive, j->head);
  j->status = 500;
}

/* Runs a pooled route: runtime.dispatch(handler, req) -> status, body, headers ->
 * response bytes in j->out, req being made from the copy by the same code as on the loop.
 * The route is found by its label, so a job sent before a --reload finds its route in a
 * state that has reloaded. */
static void run_request(worker_t *w, ml_job_t *j) {
  char err[256];
  if (!w->app) {
    request_failed(j, w->load_error);
    return;
  }
  ml_app_t *a = w->app;
  ml_request_t *r = ml_request_new(&a->spare_requests);
  ml_match_t m;
  ml_request_unpack(r, &j->request, &m);
  const ml_route_t *route = ml_app_route(a, r->route, j->route);
  lua_State *L = a->L;
  lua_settop(L, 0);
  if (!route) {
    ml_log(ML_LOG_ERROR, "%s: no such route in the reloaded code", r->route);
    request_failed(j, NULL);
  } else {
    lua_pushcfunction(L, ml_lua_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->dispatch_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, route->handler_ref);
    ml_request_push(L, r, &m, a->req_mt_ref);
    if (lua_pcall(L, 2, 3, 1)) {
      request_failed(j, lua_tostring(L, -1));
    } else {
      int status = ml_lresp_build(L, 2, &j->out, &a->scratch, &j->keepalive, j->head, err,
                                  sizeof err);
      if (status < 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s: %s", route->label, err);
        request_failed(j, why);
      } else {
        j->status = status;
      }
    }
  }
  lua_settop(L, 0);
  ml_request_release(r, &a->spare_requests);
}

/* Leaves exactly (false, message) on the stack, the message being the value on top. */
static void call_failed(lua_State *L) {
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  while (lua_gettop(L) > 2) lua_remove(L, 1);
}

/* Replaces the function spec at index 3 with the function: bytecode is compiled once per
 * thread (cached), a "module.function" name is resolved by runtime.resolve. Returns 0, or
 * -1 with the error on top. */
static int resolve_fn(worker_t *w, lua_State *L, const char *kind) {
  if (kind[0] == 'b') {
    size_t slen;
    const char *code = lua_tolstring(L, 3, &slen);
    lua_rawgeti(L, LUA_REGISTRYINDEX, w->cache_ref);
    lua_pushvalue(L, 3);
    lua_rawget(L, -2);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      if (luaL_loadbuffer(L, code, slen, "=run_in_pool")) return -1;
      lua_pushvalue(L, 3);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
    lua_replace(L, 3);
    lua_pop(L, 1);   /* the cache */
    return 0;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, w->app->resolve_ref);
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 1, 1, 1)) return -1;
  lua_replace(L, 3);
  return 0;
}

/* Runs run_in_pool's function: in = (kind, spec, args...), out = (true, results...) or
 * (false, "message + traceback"). */
static void run_call(worker_t *w, ml_job_t *j) {
  char err[256];
  j->out.len = 0;
  if (!w->app) {   /* (false, message), packed without a state */
    char msg[1200];
    int len = snprintf(msg, sizeof msg, "run_in_pool: the pool's Lua state failed to load "
                       "the app: %s", w->load_error);
    ml_copy_put_bool(&j->out, 0);
    ml_copy_put_str(&j->out, msg, len < (int)sizeof msg ? (size_t)len : sizeof msg - 1);
    return;
  }
  lua_State *L = w->app->L;
  lua_settop(L, 0);
  lua_pushcfunction(L, ml_lua_traceback);   /* 1 */
  int n = ml_copy_unpack(L, j->in.data, j->in.len);
  if (n < 2) {
    lua_pushstring(L, "run_in_pool: corrupt job");
    call_failed(L);
  } else if (resolve_fn(w, L, lua_tostring(L, 2))) {
    call_failed(L);
  } else {
    lua_remove(L, 2);   /* kind: the stack is now traceback, fn, args... */
    if (lua_pcall(L, n - 2, LUA_MULTRET, 1)) {
      call_failed(L);
    } else {
      lua_pushboolean(L, 1);
      lua_replace(L, 1);   /* true, results... */
    }
  }
  if (ml_copy_pack(L, 1, lua_gettop(L), &j->out, err, sizeof err)) {
    lua_settop(L, 0);
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "run_in_pool: a result %s", err);
    ml_copy_pack(L, 1, 2, &j->out, err, sizeof err);
  }
  lua_settop(L, 0);
}

/* Closes the worker's state; its loop (and wake handle) stay for the next one. */
static void worker_teardown(worker_t *w) {
  if (w->app) {
    ml_app_stop(w->app);
    uv_unref((uv_handle_t *)&w->wake);
    uv_run(&w->loop, UV_RUN_DEFAULT);   /* the scheduler's handles close */
    uv_ref((uv_handle_t *)&w->wake);
    ml_app_free(w->app);
    w->app = NULL;
  }
  free(w->load_error);
  w->load_error = NULL;
}

static void wake_cb(uv_async_t *a) {
  (void)a;   /* waking uv_run is all it is for */
}

static void idle_remove(ml_pool_t *p, worker_t *w) {
  for (int i = 0; i < p->nidle; i++)
    if (p->idle[i] == w) {
      p->idle[i] = p->idle[--p->nidle];
      break;
    }
  w->idle = 0;
}

/* A pool thread. Between jobs it waits on its own loop, not on a condition variable, so
 * what its state started in the background (moonlet.spawn at app load, a spawned task's
 * timers and sockets) keeps running while the thread is idle; a submitted job wakes it
 * through w->wake. Jobs run outside any libuv callback, so their blocking waits may run
 * the loop themselves. */
static void *worker_main(void *arg) {
  worker_t *w = arg;
  ml_pool_t *p = w->pool;
  uv_loop_init(&w->loop);
  uv_async_init(&w->loop, &w->wake, wake_cb);
  if (worker_init(w)) ml_log(ML_LOG_ERROR, "pool: %s", w->load_error);
  pthread_mutex_lock(&p->lock);
  w->generation = p->generation;
  for (;;) {
    if (w->idle) idle_remove(p, w);
    if (!p->head) {
      if (p->stopping) break;
      w->idle = 1;
      p->idle[p->nidle++] = w;
      pthread_mutex_unlock(&p->lock);
      uv_run(&w->loop, UV_RUN_ONCE);   /* a job (w->wake) or background work */
      pthread_mutex_lock(&p->lock);
      continue;
    }
    ml_job_t *j = p->head;
    p->head = j->next;
    if (p->head) p->head->prev = NULL; else p->tail = NULL;
    p->queued--;
    j->state = JOB_RUNNING;
    int generation = p->generation;
    pthread_mutex_unlock(&p->lock);
    if (generation != w->generation) {   /* the code changed (--reload): load it anew */
      worker_teardown(w);
      if (worker_init(w)) ml_log(ML_LOG_ERROR, "pool: reload: %s", w->load_error);
      w->generation = generation;
    }
    if (j->kind == ML_JOB_REQUEST) run_request(w, j);
    else run_call(w, j);
    pthread_mutex_lock(&p->lock);
    j->state = JOB_DONE;
    j->next = p->done;
    p->done = j;
    uv_async_send(&p->async);
  }
  pthread_mutex_unlock(&p->lock);
  worker_teardown(w);
  uv_close((uv_handle_t *)&w->wake, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
  pthread_mutex_lock(&p->lock);
  w->exited = 1;
  p->exited++;
  pthread_cond_broadcast(&p->exit_cond);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* --- the loop side ------------------------------------------------------------------- */

static void done_cb(uv_async_t *a) {
  ml_pool_t *p = a->data;
  pthread_mutex_lock(&p->lock);
  ml_job_t *list = p->done;
  p->done = NULL;
  pthread_mutex_unlock(&p->lock);
  ml_job_t *rev = NULL;   /* oldest first */
  while (list) {
    ml_job_t *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  while (rev) {
    ml_job_t *j = rev;
    rev = j->next;
    if (--p->outstanding == 0) uv_unref((uv_handle_t *)&p->async);
    if (j->cancelled) ml_job_free(j);
    else j->done(j);
  }
}

ml_pool_t *ml_pool_new(uv_loop_t *loop, const char *appdir, int size, int max_queue) {
  ml_pool_t *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->loop = loop;
  p->size = size > 0 ? size : 1;
  p->max_queue = max_queue;
  p->appdir = strdup(appdir);
  p->workers = calloc((size_t)p->size, sizeof *p->workers);
  if (!p->workers) abort();
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->exit_cond, NULL);
  p->idle = calloc((size_t)p->size, sizeof *p->idle);
  if (!p->idle) abort();
  uv_async_init(loop, &p->async, done_cb);
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async);
  return p;
}

int ml_pool_submit(ml_pool_t *p, ml_job_t *j) {
  pthread_mutex_lock(&p->lock);
  /* jobs that neither an idle thread nor one yet to start will take at once */
  int waiting = p->queued - p->nidle - (p->size - p->nthreads);
  if (waiting >= p->max_queue) {
    pthread_mutex_unlock(&p->lock);
    return UV_EBUSY;
  }
  j->state = JOB_QUEUED;
  j->next = NULL;
  j->prev = p->tail;
  if (p->tail) p->tail->next = j; else p->head = j;
  p->tail = j;
  p->queued++;
  if (p->nidle > 0) {   /* wake the thread that went idle last: its caches are warm */
    worker_t *w = p->idle[--p->nidle];
    w->idle = 0;
    uv_async_send(&w->wake);
  } else if (p->nthreads < p->size) {   /* start a thread lazily */
    worker_t *w = &p->workers[p->nthreads];
    w->pool = p;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    if (pthread_create(&w->thread, &attr, worker_main, w) == 0) p->nthreads++;
    else ml_log(ML_LOG_WARN, "pool: cannot start a thread (%d running)", p->nthreads);
    pthread_attr_destroy(&attr);
  }
  pthread_mutex_unlock(&p->lock);
  if (p->outstanding++ == 0 && !p->detached) uv_ref((uv_handle_t *)&p->async);
  return 0;
}

void ml_pool_detach(ml_pool_t *p) {
  if (!p) return;
  p->detached = 1;
  uv_unref((uv_handle_t *)&p->async);
}

void ml_pool_reload(ml_pool_t *p) {
  pthread_mutex_lock(&p->lock);
  p->generation++;
  pthread_mutex_unlock(&p->lock);
}

void ml_pool_cancel(ml_pool_t *p, ml_job_t *j) {
  pthread_mutex_lock(&p->lock);
  if (j->state == JOB_QUEUED) {
    if (j->prev) j->prev->next = j->next; else p->head = j->next;
    if (j->next) j->next->prev = j->prev; else p->tail = j->prev;
    p->queued--;
    pthread_mutex_unlock(&p->lock);
    if (--p->outstanding == 0) uv_unref((uv_handle_t *)&p->async);
    ml_job_free(j);
    return;
  }
  j->cancelled = 1;   /* running or done: freed by done_cb */
  pthread_mutex_unlock(&p->lock);
}

static void pool_closed_cb(uv_handle_t *h) {
  ml_pool_t *p = h->data;
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->exit_cond);
  free(p->idle);
  free(p->workers);
  free(p->appdir);
  free(p);
}

void ml_pool_free(ml_pool_t *p, double wait_s) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stopping = 1;
  for (int i = 0; i < p->nidle; i++) uv_async_send(&p->idle[i]->wake);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)wait_s + 1;
  while (p->exited < p->nthreads)
    if (pthread_cond_timedwait(&p->exit_cond, &p->lock, &until)) break;
  int all = p->exited == p->nthreads;
  pthread_mutex_unlock(&p->lock);
  if (!all) {   /* a handler that never returns: leave the process to end it */
    ml_log(ML_LOG_WARN, "pool: %d thread(s) still busy at shutdown", p->nthreads - p->exited);
    uv_close((uv_handle_t *)&p->async, NULL);
    return;
  }
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->workers[i].thread, NULL);
  while (p->head) {
    ml_job_t *j = p->head;
    p->head = j->next;
    ml_job_free(j);
  }
  while (p->done) {
    ml_job_t *j = p->done;
    p->done = j->next;
    ml_job_free(j);
  }
  uv_close((uv_handle_t *)&p->async, pool_closed_cb);
}

/* --- moonlet.run_in_pool ------------------------------------------------------------- */

static void call_done(ml_job_t *j) {
  ml_task_t *t = j->data;
  int n = ml_copy_unpack(t->co, j->out.data, j->out.len);
  ml_job_free(j);
  if (n < 1) {
    lua_pushboolean(t->co, 0);
    lua_pushstring(t->co, "run_in_pool: corrupt result");
    n = 2;
  }
  ml_task_wake(t, n);
}

static void call_cancel(ml_task_t *t) {
  ml_pool_cancel(t->sched->pool, t->wait);
}

static int dump_writer(lua_State *L, const void *p, size_t sz, void *ud) {
  (void)L;
  ml_buf_add(ud, p, sz);
  return 0;
}

/* run_in_pool(fn | "module.function", ...) -> true, results... | false, message
 * (moonlet.run_in_pool raises on false). In a pool thread fn simply runs there. */
static int l_run_in_pool(lua_State *L) {
  int ft = lua_type(L, 1);
  luaL_argcheck(L, ft == LUA_TFUNCTION || ft == LUA_TSTRING, 1,
                "expected a function or a \"module.function\" name");
  ml_sched_t *s = ml_sched_of(L);
  int nargs = lua_gettop(L) - 1;
  if (s && s->in_pool) {   /* already on a pool thread: call it here */
    if (ft == LUA_TSTRING) {
      lua_getglobal(L, "require");
      lua_pushstring(L, "moonlet.runtime");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "resolve");
      lua_pushvalue(L, 1);
      lua_call(L, 1, 1);
      lua_replace(L, 1);
      lua_pop(L, 1);
    }
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    lua_call(L, nargs, LUA_MULTRET);
    return lua_gettop(L);
  }
  if (!s || !s->pool) return luaL_error(L, "run_in_pool: no worker pool in this state");
  ml_job_t *j = ml_job_new(ML_JOB_CALL);
  char err[256];
  if (ft == LUA_TFUNCTION) {
    if (lua_iscfunction(L, 1)) {
      ml_job_free(j);
      return luaL_argerror(L, 1, "a C function cannot be sent to the pool");
    }
    const char *up = lua_getupvalue(L, 1, 1);
    if (up) {
      ml_job_free(j);
      return luaL_error(L, "run_in_pool: the function uses upvalue '%s' (a local of an outer "
                           "scope); pass it as an argument or use a \"module.function\" name", up);
    }
    ml_buf_t code = {0};
    lua_pushvalue(L, 1);
    lua_dump(L, dump_writer, &code);
    lua_pop(L, 1);
    ml_copy_put_str(&j->in, "b", 1);
    ml_copy_put_str(&j->in, code.data, code.len);
    ml_buf_free(&code);
  } else {
    size_t len;
    const char *name = lua_tolstring(L, 1, &len);
    ml_copy_put_str(&j->in, "m", 1);
    ml_copy_put_str(&j->in, name, len);
  }
  if (ml_copy_pack(L, 2, nargs, &j->in, err, sizeof err)) {
    ml_job_free(j);
    return luaL_error(L, "run_in_pool: an argument %s", err);
  }
  ml_task_t *t = ml_task_current(L);
  j->data = t;
  j->done = call_done;
  if (ml_pool_submit(s->pool, j)) {
    ml_job_free(j);
    lua_pushboolean(L, 0);
    lua_pushstring(L, "pool queue is full");
    return 2;
  }
  return ml_task_wait(L, t, call_cancel, j);
}

/* in_pool() -> true on a pool thread */
static int l_in_pool(lua_State *L) {
  ml_sched_t *s = ml_sched_of(L);
  lua_pushboolean(L, s && s->in_pool);
  return 1;
}

void ml_pool_open(lua_State *L) {
  static const luaL_Reg fns[] = {{"run_in_pool", l_run_in_pool}, {"in_pool", l_in_pool},
                                 {NULL, NULL}};
  luaL_register(L, NULL, fns);
}
