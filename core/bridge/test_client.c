/* The in-process test client's C side (moonlet.testing's client(app_or_dir), lua side in
 * lua/moonlet/testing/app_client.lua): the app runs in the spec's own Lua state, on the
 * spec runner's loop, behind a real ml_server_t whose connections are memory connections
 * (ml_server_conn_mem: no socket, no port, no binary). A request takes the one path every request takes:
 * bytes -> llhttp (server.c) -> router -> req (request.c) -> runtime.dispatch -> the
 * response serialized into the connection (lresponse.c) -> bytes back. The spec blocks
 * while the loop runs, as with any moonlet primitive in a spec (a blocking task).
 *
 *   test_client_new(app, appdir|nil, pool_size, log_level, debug) -> tc
 *                                 debug: the development mode (core.h) while it is open
 *     tc:connect() -> conn        a new (memory) connection the server serves
 *     tc:lifespan(phase)          runs "startup" / "shutdown" hooks: true | nil, err
 *     tc:activate()               makes the app's scheduler the state's (see ml_sched_bind)
 *     tc:close()                  closes the connections, the app state, the pool
 *     conn:send(bytes)            queues bytes for the server (never waits)
 *     conn:recv(timeout_s)        bytes received | nil, "closed" | nil, "timeout"
 *     conn:close()
 *
 * Ownership: tc_t and conn_t are heap structs the userdata point to; a conn_t goes in the
 * close callback of its last handle, a tc_t in tc:close (or __gc, or when the runner's
 * scheduler closes: a spec that forgot tc:close still lets the runner's loop end). */
#include "app.h"
#include "core.h"
#include "err.h"
#include "lifespan.h"
#include "log.h"
#include "mem.h"
#include "server.h"
#include "dispatch.h"
#include "workers.h"
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define TC_MT "moonlet.test_client"
#define CONN_MT "moonlet.test_client.conn"

typedef struct tc_s tc_t;

/* On the runner's scheduler until it closes (hooks cannot be removed): then it ends its
 * client if still open, and goes. */
typedef struct {
  ml_sched_hook_t hook;
  tc_t *tc;                  /* NULL once the client closed */
} runner_hook_t;

struct tc_s {
  ml_app_t *app;
  ml_server_t srv;
  ml_workers_t *workers;     /* pooled routes' threads */
  ml_workers_t *executor;    /* run_in_pool's threads */
  ml_sched_t *prev;          /* the state's scheduler before (the runner's) */
  runner_hook_t *hook;       /* on prev: ends a client left open */
  int prev_log_level;
  int prev_dev_mode;         /* like the log level, process-wide: restored on close */
  int closed;
};

typedef struct {
  ml_server_conn_t *sc;      /* the server's side (a memory connection), NULL once closed */
  uv_timer_t timer;          /* recv's timeout */
  uv_idle_t arrived;         /* wakes recv's waiter after output or EOF came (see
                              * conn_arrived) */
  ml_buf_t in;               /* received, not returned by recv yet */
  ml_task_t *waiter;         /* in recv */
  int eof, closing, handles;
} conn_t;

/* --- connections ------------------------------------------------------------------- */

static void conn_closed_cb(uv_handle_t *h) {
  conn_t *c = h->data;
  if (--c->handles > 0) return;
  ml_buf_free(&c->in);
  free(c);
}

/* Wakes recv's waiter with what there is: the bytes, or nil and why. */
static void conn_wake(conn_t *c, const char *why) {
  ml_task_t *t = c->waiter;
  if (!t) return;
  c->waiter = NULL;
  uv_timer_stop(&c->timer);
  uv_idle_stop(&c->arrived);
  if (c->in.len) {
    lua_pushlstring(t->co, c->in.data, c->in.len);
    c->in.len = 0;
    ml_task_wake(t, 1);
    return;
  }
  lua_pushnil(t->co);
  lua_pushstring(t->co, why);
  ml_task_wake(t, 2);
}

static void timeout_cb(uv_timer_t *t) {
  conn_t *c = t->data;
  conn_wake(c, c->eof ? "closed" : "timeout");
}

static void arrived_cb(uv_idle_t *h) {
  conn_t *c = h->data;
  uv_idle_stop(h);
  conn_wake(c, "closed");   /* the bytes, if any came; else the EOF */
}

/* Output or EOF for the waiter. The server calls from inside its own work, often from
 * the app's coroutine (a handler's stream write): the waiter is not the running thread
 * then, and pushing the bytes onto its stack could run a GC step, finalizers included, on
 * a thread that is not running. So the waiter is woken from the loop, by an idle handle
 * (which also keeps the loop's poll from blocking meanwhile), at the next idle phase. */
static void conn_arrived(conn_t *c) {
  if (c->waiter) uv_idle_start(&c->arrived, arrived_cb);
}

static void peer_data(void *arg, const char *data, size_t len) {
  conn_t *c = arg;
  ml_buf_add(&c->in, data, len);
  conn_arrived(c);
}

static void peer_close(void *arg) {
  conn_t *c = arg;
  c->sc = NULL;
  c->eof = 1;
  conn_arrived(c);
}

static const ml_server_peer_t peer = { peer_data, peer_close };

static void recv_cancel(ml_task_t *t) {
  conn_t *c = t->wait;
  c->waiter = NULL;
  uv_timer_stop(&c->timer);
  uv_idle_stop(&c->arrived);
}

static conn_t *check_conn(lua_State *L) {
  conn_t **p = luaL_checkudata(L, 1, CONN_MT);
  if (!*p) luaL_error(L, "the test client's connection is closed");
  return *p;
}

static int conn_send(lua_State *L) {
  conn_t *c = check_conn(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  if (c->sc) ml_server_conn_feed(c->sc, data, len);
  return 0;
}

static int conn_recv(lua_State *L) {
  conn_t *c = check_conn(L);
  uint64_t ms = lua_isnoneornil(L, 2) ? 0 : ml_sched_check_ms(L, 2);
  if (c->in.len) {
    lua_pushlstring(L, c->in.data, c->in.len);
    c->in.len = 0;
    return 1;
  }
  if (c->eof) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  ml_task_t *t = ml_task_current(L);
  c->waiter = t;
  if (ms) uv_timer_start(&c->timer, timeout_cb, ms, 0);
  return ml_task_wait(L, t, recv_cancel, c);
}

static void conn_free(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->waiter) ml_task_cancel(c->waiter);
  if (c->sc) ml_server_conn_hangup(c->sc);
  c->sc = NULL;
  uv_close((uv_handle_t *)&c->timer, conn_closed_cb);
  uv_close((uv_handle_t *)&c->arrived, conn_closed_cb);
}

static int conn_close(lua_State *L) {
  conn_t **p = luaL_checkudata(L, 1, CONN_MT);
  if (*p) conn_free(*p);
  *p = NULL;
  return 0;
}

/* --- the client -------------------------------------------------------------------- */

static tc_t *check_tc(lua_State *L) {
  tc_t **p = luaL_checkudata(L, 1, TC_MT);
  if (!*p || (*p)->closed) luaL_error(L, "the test client is closed");
  return *p;
}

static int tc_connect(lua_State *L) {
  tc_t *tc = check_tc(L);
  conn_t *c = ml_xcalloc(1, sizeof *c);
  uv_timer_init(tc->srv.loop, &c->timer);
  uv_idle_init(tc->srv.loop, &c->arrived);
  c->timer.data = c->arrived.data = c;
  c->handles = 2;
  c->sc = ml_server_conn_mem(&tc->srv, &peer, c);
  conn_t **p = lua_newuserdata(L, sizeof *p);
  *p = c;
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);
  return 1;
}

typedef struct {
  int done, ok;
  char *msg;
} phase_t;

static void phase_done(ml_app_t *a, int ok, const char *msg, void *ctx) {
  (void)a;
  phase_t *ph = ctx;
  ph->done = 1;
  ph->ok = ok;
  if (!ok) ph->msg = ml_xstrdup(msg ? msg : "error");
}

/* Runs the hooks of a phase, running the loop until they end. */
static int tc_lifespan(lua_State *L) {
  tc_t *tc = check_tc(L);
  static const char *const names[] = { "startup", "shutdown", NULL };
  int phase = luaL_checkoption(L, 2, NULL, names);
  ml_sched_bind(&tc->app->sched);
  phase_t ph = { 0, 0, NULL };
  ml_lifespan_start(tc->app, phase ? ML_LIFESPAN_SHUTDOWN : ML_LIFESPAN_STARTUP, phase_done,
                    &ph);
  while (!ph.done) uv_run(tc->srv.loop, UV_RUN_ONCE);
  if (ph.ok) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushnil(L);
  lua_pushstring(L, ph.msg);
  free(ph.msg);
  return 2;
}

static int tc_activate(lua_State *L) {
  ml_sched_bind(&check_tc(L)->app->sched);
  return 0;
}

/* Ends the client: its connections close (requests in flight are aborted), its tasks are
 * cancelled, its pool's threads stop; L's scheduler is the one before again. No Lua runs. */
static void tc_end(tc_t *tc) {
  if (tc->closed) return;
  tc->closed = 1;
  if (tc->hook) tc->hook->tc = NULL;
  ml_workers_detach(tc->workers);
  ml_workers_detach(tc->executor);
  ml_server_close_all(&tc->srv);
  ml_app_stop(tc->app);
  while (!tc->app->sched.handles_closed) uv_run(tc->srv.loop, UV_RUN_NOWAIT);
  if (ml_sched_of(tc->app->L) == &tc->app->sched) ml_sched_bind(tc->prev);
  ml_app_free(tc->app);
  ml_workers_free(tc->workers, 10);
  ml_workers_free(tc->executor, 10);
  __atomic_store_n(&ml_log_level, tc->prev_log_level, __ATOMIC_RELAXED);
  ml_core_set_dev_mode(tc->prev_dev_mode);
}

static int tc_close(lua_State *L) {
  tc_t **p = luaL_checkudata(L, 1, TC_MT);
  if (!*p) return 0;
  tc_end(*p);
  free(*p);
  *p = NULL;
  return 0;
}

/* The runner's scheduler closes (the end of `moonlet test`): a client still open ends. */
static void runner_closing(ml_sched_t *s, void *data) {
  (void)s;
  runner_hook_t *h = data;
  if (h->tc) {
    h->tc->hook = NULL;
    tc_end(h->tc);
  }
  free(h);
}

/* test_client_new(app, appdir|nil, pool_size, log_level, debug, executor_size) */
static int tc_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *appdir = luaL_optstring(L, 2, NULL);
  int pool_size = (int)luaL_optinteger(L, 3, 4);
  int executor_size = (int)luaL_optinteger(L, 6, 4);
  int log_level = (int)luaL_optinteger(L, 4, ML_LOG_WARN);
  int prev_dev_mode = ml_core_dev_mode();
  ml_sched_t *prev = ml_sched_of(L);
  if (!prev) return luaL_error(L, "the test client needs moonlet's runtime (moonlet test)");
  /* before the app's routes are taken (runtime.routes reads it) and its threads start */
  ml_core_set_dev_mode(lua_toboolean(L, 5));
  char err[1024];
  ml_app_t *a = ml_app_in(L, 1, prev->loop, err, sizeof err);
  if (!a) {
    ml_core_set_dev_mode(prev_dev_mode);
    ml_sched_bind(prev);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  tc_t *tc = ml_xcalloc(1, sizeof *tc);
  tc->app = a;
  tc->prev = prev;
  tc->prev_log_level = __atomic_load_n(&ml_log_level, __ATOMIC_RELAXED);
  tc->prev_dev_mode = prev_dev_mode;
  __atomic_store_n(&ml_log_level, log_level, __ATOMIC_RELAXED);
  ml_server_config_t sc = {
      .host = "127.0.0.1",
      .max_body = 1 << 20,
      .max_header = 16 << 10,
      /* the spec decides when a connection ends, not a timer */
      .header_timeout_ms = 3600 * 1000,
      .keepalive_timeout_ms = 3600 * 1000,
      .ws_max_message = 1 << 20,
      .listen_fd = -1,
  };
  ml_server_init(&tc->srv, prev->loop, &sc);
  tc->srv.dispatch = ml_dispatch;
  tc->srv.abort = ml_dispatch_abort;
  tc->srv.body = ml_dispatch_body;
  tc->srv.ctx = a;
  if (appdir) {
    tc->workers = ml_workers_new(prev->loop, appdir, NULL, pool_size, 1024, ML_WORKERS_POOL);
    tc->executor = ml_workers_new(prev->loop, appdir, NULL, executor_size, 1024,
                                  ML_WORKERS_EXECUTOR);
    a->sched.workers = tc->workers;
    a->sched.executor = tc->executor;
  }
  tc->hook = ml_xcalloc(1, sizeof *tc->hook);
  tc->hook->hook.fn = runner_closing;
  tc->hook->hook.data = tc->hook;
  tc->hook->tc = tc;
  ml_sched_on_close(prev, &tc->hook->hook);
  tc_t **p = lua_newuserdata(L, sizeof *p);
  *p = tc;
  luaL_getmetatable(L, TC_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void ml_test_client_open(lua_State *L) {
  static const luaL_Reg tc_methods[] = {
      { "connect", tc_connect }, { "lifespan", tc_lifespan }, { "activate", tc_activate },
      { "close", tc_close }, { NULL, NULL } };
  static const luaL_Reg conn_methods[] = {
      { "send", conn_send }, { "recv", conn_recv }, { "close", conn_close }, { NULL, NULL } };
  ml_core_class(L, TC_MT, tc_methods, tc_close);
  ml_core_class(L, CONN_MT, conn_methods, conn_close);
  lua_pushcfunction(L, tc_new);
  lua_setfield(L, -2, "test_client_new");
}
