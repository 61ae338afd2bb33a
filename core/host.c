/* The host: a loop, a server and an app wired together (see moonlet.h). Starting binds
 * the port, runs the app's startup hooks, then accepts. Shutdown is graceful, in steps
 * all within graceful_timeout: drain the server (in-flight requests finish), wait for the
 * background tasks requests spawned, run the shutdown hooks, then close every handle so
 * ml_host_run returns with an empty loop. A stop that cannot wait (the timeout ended, or
 * it was asked for twice) drops what still runs and says how much; one that the loop
 * cannot do at all (a handler that never yields) ends the process. */
#include "moonlet.h"
#include "err.h"
#include "lifespan.h"
#include "mem.h"
#include "app.h"
#include "core.h"
#include "server.h"
#include "dispatch.h"
#include "events.h"
#include "log.h"
#include "post.h"
#include "preload.h"
#include "reload.h"
#include "shared.h"
#include "watchdog.h"
#include "workers.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct ml_host_s {
  ml_config_t cfg;
  uv_loop_t loop;
  ml_server_t *server;
  ml_app_t *app;
  ml_workers_t *workers;     /* for pooled routes and run_in_pool, shared by reloads */
  ml_watchdog_t *watchdog;
  char *appdir;
  ml_reload_t *reload;
  ml_preload_t *preload;     /* ml_host_preload's modules, for every state; NULL: none */
  ml_post_t *post;           /* ml_host_post and ml_host_emit: calls from other threads */
  struct {                   /* replaced by a reload: their requests end, then their */
    ml_app_t *app;           /* shutdown hooks run, then they are freed */
    int state;               /* RETIRED_* */
  } retired[16];
  int nretired;
  uv_timer_t reaper;
  uv_async_t stop_async;
  struct sigaction old_sigint, old_sigterm;   /* given back when the stop is over */
  uv_prepare_t flush;        /* flushes the log once per loop turn */
  uv_timer_t grace;
  uv_timer_t step;           /* takes a stop to its next step, outside any task */
  int signals, stopping, closed;
  int starting;              /* ml_host_listen runs the startup hooks: a stop waits */
  int stop_step;             /* STOP_*: where a graceful stop is */
  int reload_pending;
  /* a stop (see request_stop): the first two are atomic, written on any thread */
  int stop_requests;         /* how many times a stop was asked for */
  uint64_t stop_deadline;    /* uv_hrtime() the stop must be done by; 0 before one */
  uint64_t grace_ns;         /* cfg.graceful_timeout */
  int dropped;               /* what the stop cut short: ml_host_run returns it */
  int forced;                /* the stop did not wait for everything to end */
};

void ml_config_defaults(ml_config_t *cfg) {
  cfg->host = "127.0.0.1";
  cfg->port = 8000;
  cfg->log_level = ML_LOG_INFO;
  cfg->max_body = 1 << 20;
  cfg->max_header = 16 << 10;
  cfg->ws_max_message = 1 << 20;
  cfg->graceful_timeout = 10;
  cfg->header_timeout = 10;
  cfg->keepalive_timeout = 5;
  cfg->pool_size = 40;
  cfg->pool_queue = 1024;
  cfg->shared_mem = 64u << 20;
  cfg->block_warn_ms = 100;
  cfg->reload = 0;
  cfg->debug = 0;
}

enum { RETIRED_SERVING, RETIRED_HOOKS, RETIRED_DONE };
/* the steps of a graceful stop, in order */
enum { STOP_NONE, STOP_REQUESTS, STOP_BACKGROUND, STOP_HOOKS, STOP_DONE };

static void release_signals(ml_host_t *h);

/* The end of a stop: everything still on the loop goes, so ml_host_run returns. Tasks
 * still running (spawned at load or by a startup hook, or abandoned) are cancelled here. */
static void close_handles(ml_host_t *h) {
  if (h->closed) return;
  h->closed = 1;
  release_signals(h);   /* before stop_async goes: the handler wakes the loop with it */
  if (h->app) h->app->sched.background_idle_cb = NULL;
  ml_post_close(h->post);   /* what was posted runs now, while the app still does */
  ml_app_stop(h->app);
  for (int i = 0; i < h->nretired; i++) ml_app_stop(h->retired[i].app);
  ml_workers_detach(h->workers);
  ml_reload_stop(h->reload);
  h->reload = NULL;
  uv_close((uv_handle_t *)&h->reaper, NULL);
  uv_close((uv_handle_t *)&h->stop_async, NULL);
  uv_close((uv_handle_t *)&h->flush, NULL);
  uv_close((uv_handle_t *)&h->grace, NULL);
  uv_close((uv_handle_t *)&h->step, NULL);
}

/* --- the steps of a graceful stop ------------------------------------------------------
 * Each step's end (the server drained, the last background task ended, the hooks ended)
 * calls next_step, which lets step_cb start the next one from a callback of its own: the
 * end of a step may come from inside a task, whose primitive still has work to do. */

static void step_cb(uv_timer_t *t);

static void next_step(ml_host_t *h, int step) {
  h->stop_step = step;
  uv_timer_start(&h->step, step_cb, 0, 0);
}

static void background_idle_cb(ml_sched_t *s) {
  ml_host_t *h = s->loop->data;
  s->background_idle_cb = NULL;
  next_step(h, STOP_BACKGROUND);
}

static void shutdown_done(ml_app_t *a, int ok, const char *msg, void *ctx) {
  (void)a, (void)ok, (void)msg;   /* a shutdown hook's error is logged already */
  next_step(ctx, STOP_DONE);
}

static void step_cb(uv_timer_t *t) {
  ml_host_t *h = t->data;
  if (h->closed) return;
  if (h->stop_step == STOP_BACKGROUND) {
    ml_sched_t *s = &h->app->sched;
    if (s->background > 0) {
      s->background_idle_cb = background_idle_cb;
      return;
    }
    h->stop_step = STOP_HOOKS;
    ml_lifespan_start(h->app, ML_LIFESPAN_SHUTDOWN, shutdown_done, h);
  } else if (h->stop_step == STOP_DONE) {
    close_handles(h);
  }
}

static void drained_cb(ml_server_t *s) {
  next_step(s->loop->data, STOP_BACKGROUND);
}

/* --- stopping ---------------------------------------------------------------------------
 * A stop is asked for by SIGINT/SIGTERM or ml_host_stop, on any thread, in a signal handler
 * too: request_stop counts it, sets the time it must be done by (graceful_timeout after the
 * first request, at once after another) and wakes the loop, which does it (stop_cb). A
 * handler that never yields keeps the loop from doing anything: then the watchdog's thread
 * sees the loop still held past that time and ends the process (held_cb). */

static ml_host_t *signal_host;   /* the host SIGINT/SIGTERM stop (atomic) */

static uint64_t monotonic_ns(void) {   /* uv_hrtime()'s clock, async-signal-safe */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Async-signal-safe: atomics, clock_gettime and uv_async_send only. */
static void request_stop(ml_host_t *h) {
  int n = __atomic_add_fetch(&h->stop_requests, 1, __ATOMIC_SEQ_CST);
  uint64_t due = monotonic_ns() + (n == 1 ? h->grace_ns : 0);
  uint64_t cur = __atomic_load_n(&h->stop_deadline, __ATOMIC_SEQ_CST);
  while ((cur == 0 || due < cur) &&
         !__atomic_compare_exchange_n(&h->stop_deadline, &cur, due, 0, __ATOMIC_SEQ_CST,
                                      __ATOMIC_SEQ_CST)) {
  }
  uv_async_send(&h->stop_async);
}

/* What a stop that cannot wait says first: "graceful timeout (10.0s)" or another request. */
static const char *stop_reason(ml_host_t *h, char *buf, size_t len) {
  if (__atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST) > 1) return "asked to stop again";
  snprintf(buf, len, "graceful timeout (%.1fs)", h->cfg.graceful_timeout);
  return buf;
}

/* Ends a stop without waiting any longer: every connection closes, the requests and
 * background tasks still running are dropped, the shutdown hooks not run (or cut short),
 * and the log says so. */
static void stop_now(ml_host_t *h) {
  char buf[64];
  const char *why = stop_reason(h, buf, sizeof buf);
  int requests = ml_server_requests(h->server);
  int tasks = h->app->sched.background;
  int hooks = h->stop_step < STOP_DONE && ml_lifespan_count(h->app, ML_LIFESPAN_SHUTDOWN);
  if (h->stop_step <= STOP_REQUESTS)
    ml_log(ML_LOG_WARN, "%s: closing %d connection(s), dropping %d request(s) still running",
           why, h->server->nconns, requests);
  if (tasks) ml_log(ML_LOG_WARN, "%s: abandoning %d background task(s)", why, tasks);
  if (hooks)
    ml_log(ML_LOG_WARN, "%s: %s", why, h->stop_step == STOP_HOOKS
               ? "on_shutdown hooks did not finish" : "on_shutdown hooks not run");
  h->dropped += requests + tasks + hooks;
  h->forced = 1;
  ml_server_close_all(h->server);
  close_handles(h);
}

static void grace_cb(uv_timer_t *t) {
  stop_now(t->data);
}

static void begin_stop(ml_host_t *h) {
  h->stopping = 1;
  h->stop_step = STOP_REQUESTS;
  ml_log(ML_LOG_INFO, "shutting down: %d connection(s) open", h->server->nconns);
  /* the grace period counts from the request, which a busy loop may have seen late */
  uint64_t due = __atomic_load_n(&h->stop_deadline, __ATOMIC_SEQ_CST), now = uv_hrtime();
  uv_timer_start(&h->grace, grace_cb, due > now ? (due - now + 999999) / 1000000 : 0, 0);
  h->server->on_drained = drained_cb;
  ml_server_drain(h->server);
}

/* Requests may have come in twice before the loop saw the first: it does what the last
 * one asks. */
static void stop_cb(uv_async_t *a) {
  ml_host_t *h = a->data;
  if (h->starting) return;   /* ml_host_run sees the request when the start is over */
  if (__atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST) > 1) stop_now(h);
  else if (!h->stopping) begin_stop(h);
}

/* On the watchdog's thread: past the stop's deadline a handler still holds the loop, and
 * nothing on the loop will run again. The process ends here. */
static void held_cb(void *ctx, const char *route, uint64_t held_ns) {
  ml_host_t *h = ctx;
  char buf[64];
  ml_log(ML_LOG_ERROR, "%s: %s holds the event loop (for %.0f ms) and cannot be stopped: "
         "exiting, dropping %d request(s) still running", stop_reason(h, buf, sizeof buf),
         route, (double)held_ns / 1e6, ml_server_requests(h->server));
  _exit(1);
}

static void stop_signal_cb(int signum) {
  (void)signum;
  int saved = errno;
  ml_host_t *h = __atomic_load_n(&signal_host, __ATOMIC_SEQ_CST);
  if (h) request_stop(h);
  errno = saved;
}

/* Gives SIGINT and SIGTERM back to whoever had them before ml_host_handle_signals. */
static void release_signals(ml_host_t *h) {
  if (!h->signals) return;
  h->signals = 0;
  sigaction(SIGINT, &h->old_sigint, NULL);
  sigaction(SIGTERM, &h->old_sigterm, NULL);
  ml_host_t *mine = h;
  __atomic_compare_exchange_n(&signal_host, &mine, NULL, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static void flush_cb(uv_prepare_t *p) {
  (void)p;
  ml_log_flush();
}

ml_host_t *ml_host_new(const ml_config_t *cfg) {
  ml_host_t *h = ml_xcalloc(1, sizeof *h);
  signal(SIGPIPE, SIG_IGN);
  h->cfg = *cfg;
  h->grace_ns = (uint64_t)(cfg->graceful_timeout * 1e9);
  ml_log_level = cfg->log_level;
  ml_shared_configure(cfg->shared_mem);
  /* response schemas checked (runtime.lua), errors in 500s (error_page.lua) */
  ml_core_set_dev_mode(cfg->reload || cfg->debug);
  uv_loop_init(&h->loop);
  h->loop.data = h;
  uv_async_init(&h->loop, &h->stop_async, stop_cb);
  h->post = ml_post_new(&h->loop);
  h->stop_async.data = h;
  uv_prepare_init(&h->loop, &h->flush);
  uv_prepare_start(&h->flush, flush_cb);
  uv_unref((uv_handle_t *)&h->flush);
  uv_timer_init(&h->loop, &h->grace);
  h->grace.data = h;
  uv_unref((uv_handle_t *)&h->grace);
  uv_timer_init(&h->loop, &h->step);
  h->step.data = h;
  uv_timer_init(&h->loop, &h->reaper);
  h->reaper.data = h;
  uv_unref((uv_handle_t *)&h->reaper);
  return h;
}

/* A retired app's shutdown hooks ended: the reaper frees it on its next turn (not here,
 * inside one of its tasks). */
static void retired_done(ml_app_t *a, int ok, const char *msg, void *ctx) {
  (void)ok, (void)msg;
  ml_host_t *h = ctx;
  for (int i = 0; i < h->nretired; i++)
    if (h->retired[i].app == a) h->retired[i].state = RETIRED_DONE;
}

/* Retires the apps a reload replaced: once an app's last request has ended it runs its
 * shutdown hooks, and once they have ended it is freed (its spawned tasks are cancelled
 * then, background ones included: old code is not waited for). */
static void reap_cb(uv_timer_t *t) {
  ml_host_t *h = t->data;
  for (int i = 0; i < h->nretired;) {
    ml_app_t *a = h->retired[i].app;
    if (h->retired[i].state == RETIRED_SERVING && a->requests == 0) {
      h->retired[i].state = RETIRED_HOOKS;
      ml_lifespan_start(a, ML_LIFESPAN_SHUTDOWN, retired_done, h);
    }
    if (h->retired[i].state == RETIRED_DONE) {
      ml_app_free(a);
      h->retired[i] = h->retired[--h->nretired];
    } else {
      i++;
    }
  }
  if (h->nretired == 0) uv_timer_stop(&h->reaper);
}

/* The watcher saw a change. Loading runs app.lua, which may wait (moonlet.db at load
 * time runs the loop): never inside a libuv callback, so stop the loop and let
 * ml_host_run reload between two runs. */
static void reload_cb(void *ctx) {
  ml_host_t *h = ctx;
  h->reload_pending = 1;
  uv_stop(&h->loop);
}

typedef struct {
  int done, ok;
  char *err;
  size_t errlen;
} startup_t;

static void startup_done(ml_app_t *a, int ok, const char *msg, void *ctx) {
  (void)a;
  startup_t *st = ctx;
  st->done = 1;
  st->ok = ok;
  if (ok) return;
  ml_log(ML_LOG_ERROR, "on_startup hook failed: %s", msg);
  ml_err(st->err, st->errlen, "on_startup hook failed: %.*s", (int)strcspn(msg, "\n"), msg);
}

/* Runs a's startup hooks, running the loop until they end; it serves whatever else is on
 * it meanwhile (during a reload, the old code's requests). Not from a libuv callback.
 * Returns 0, or -1 with a one-line message in err: a hook failed (its traceback is
 * logged), or the host began to stop meanwhile (a's hooks are then cancelled with it). */
static int run_startup(ml_host_t *h, ml_app_t *a, char *err, size_t errlen) {
  startup_t st = { 0, 0, err, errlen };
  ml_lifespan_start(a, ML_LIFESPAN_STARTUP, startup_done, &st);
  while (!st.done && !h->stopping) uv_run(&h->loop, UV_RUN_ONCE);
  if (st.done) return st.ok ? 0 : -1;
  ml_app_stop(a);
  return ml_err(err, errlen, "stopping before the startup hooks finished");
}

/* --reload: load the changed code into a new app and run its startup hooks; new requests
 * go to it, requests in flight finish on the old one, which then runs its shutdown hooks
 * and is freed (see reap_cb). A load error or a failed startup hook keeps the old code
 * serving. */
static void reload_now(ml_host_t *h) {
  char err[1024];
  if (h->nretired == (int)(sizeof h->retired / sizeof h->retired[0])) {
    ml_log(ML_LOG_WARN, "reload: postponed, old code still has requests running");
    return;
  }
  ml_app_t *a = ml_app_new(&h->loop, h->appdir, 0, h->preload, err, sizeof err);
  if (a) a->sched.workers = h->workers;   /* for pooled routes and run_in_pool */
  if (!a || run_startup(h, a, err, sizeof err)) {
    if (!h->stopping)
      ml_log(ML_LOG_ERROR, "reload failed, still serving the previous code: %s", err);
    ml_app_free(a);
    return;
  }
  ml_app_t *old = h->app;
  h->app = a;
  h->server->ctx = a;
  ml_workers_reload(h->workers);
  ml_watchdog_watch(h->watchdog, &a->sched);
  h->retired[h->nretired].app = old;
  h->retired[h->nretired++].state = RETIRED_SERVING;
  uv_timer_start(&h->reaper, reap_cb, 0, 250);
  ml_log(ML_LOG_INFO, "reloaded %s (%d routes)", h->appdir, a->nroutes);
}

/* --reload and the app does not load (app.lua, or an on_startup hook): the server serves
 * the error instead (moonlet.load_error) and the watcher loads the fix once it is saved,
 * as uvicorn's reloader waits. Returns the stand-in, NULL if there is none. */
static ml_app_t *serve_error(ml_host_t *h, const char *appdir, const char *err) {
  struct stat st;   /* no directory at all: nothing to wait for */
  if (!h->cfg.reload || stat(appdir, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
  ml_log(ML_LOG_ERROR, "the app failed to load, answering every request with the error "
         "until the code is fixed (--reload): %s", err);
  return ml_app_failed(&h->loop, appdir, err);
}

/* --reload: the watcher starts before the code is loaded, so that an edit saved while
 * the app loads (or before ml_host_run) is a change from what it loaded. */
static void watch_start(ml_host_t *h, const char *appdir) {
  if (!h->cfg.reload || h->reload || h->closed) return;
  struct stat st;
  if (stat(appdir, &st) != 0 || !S_ISDIR(st.st_mode)) return;
  h->reload = ml_reload_start(&h->loop, appdir, reload_cb, h);
  ml_log(ML_LOG_INFO, "watching %s for changes (--reload)", appdir);
}

int ml_host_load(ml_host_t *h, const char *appdir, char *err, size_t errlen) {
  watch_start(h, appdir);
  ml_app_t *a = ml_app_new(&h->loop, appdir, 0, h->preload, err, errlen);
  if (!a) a = serve_error(h, appdir, err);
  if (!a) return -1;
  ml_app_free(h->app);
  h->app = a;
  free(h->appdir);
  h->appdir = ml_xstrdup(appdir);
  if (!h->workers)
    h->workers = ml_workers_new(&h->loop, appdir, h->preload, h->cfg.pool_size,
                                h->cfg.pool_queue);
  a->sched.workers = h->workers;   /* for pooled routes and run_in_pool */
  return 0;
}

int ml_host_listen(ml_host_t *h, char *err, size_t errlen) {
  if (!h->app) {
    return ml_err(err, errlen, "no app loaded");
  }
  h->server = ml_xcalloc(1, sizeof *h->server);
  h->server->dispatch = ml_dispatch;
  h->server->abort = ml_dispatch_abort;
  h->server->body = ml_dispatch_body;
  h->server->ctx = h->app;
  ml_server_config_t sc = {
      .host = h->cfg.host,
      .port = h->cfg.port,
      .max_body = h->cfg.max_body,
      .max_header = h->cfg.max_header,
      .header_timeout_ms = (uint64_t)(h->cfg.header_timeout * 1000),
      .keepalive_timeout_ms = (uint64_t)(h->cfg.keepalive_timeout * 1000),
      .ws_max_message = h->cfg.ws_max_message,
  };
  if (ml_server_bind(h->server, &h->loop, &sc, err, errlen)) return -1;
  /* bound first, so a port in use is said before any hook runs; connecting is refused
   * until the hooks are done */
  h->starting = 1;
  int rc = run_startup(h, h->app, err, errlen);
  h->starting = 0;
  ml_app_t *stand_in = rc && !h->stopping ? serve_error(h, h->appdir, err) : NULL;
  if (stand_in) {
    stand_in->sched.workers = h->workers;
    ml_app_free(h->app);
    h->app = stand_in;
    h->server->ctx = stand_in;
    rc = 0;
  }
  if (rc) return -1;
  return ml_server_listen(h->server, err, errlen) ? -1 : 0;
}

int ml_host_port(const ml_host_t *h) {
  return h->server ? h->server->port : -1;
}

/* A handler of our own rather than libuv's signal watchers: those run on the loop, which
 * a handler that never yields holds. */
int ml_host_handle_signals(ml_host_t *h) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = stop_signal_cb;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  __atomic_store_n(&signal_host, h, __ATOMIC_SEQ_CST);
  if (sigaction(SIGINT, &sa, &h->old_sigint) < 0) return -1;
  if (sigaction(SIGTERM, &sa, &h->old_sigterm) < 0) {
    sigaction(SIGINT, &h->old_sigint, NULL);
    return -1;
  }
  h->signals = 1;
  return 0;
}

int ml_host_run(ml_host_t *h) {
  if (h->app && !h->watchdog) {
    h->watchdog = ml_watchdog_start(&h->app->sched, h->cfg.block_warn_ms);
    ml_watchdog_enforce(h->watchdog, &h->stop_deadline, held_cb, h);
  }
  /* a stop asked for while the startup hooks ran */
  if (__atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST)) uv_async_send(&h->stop_async);
  /* a change seen while the app loaded or started is reloaded at once */
  int pending = h->reload_pending;
  while (pending || (uv_run(&h->loop, UV_RUN_DEFAULT) && h->reload_pending)) {
    pending = h->reload_pending = 0;
    if (!h->stopping) reload_now(h);
  }
  for (int i = 0; i < h->nretired; i++) h->retired[i].app->sched.monitor = NULL;
  ml_watchdog_stop(h->watchdog);   /* and the current app's */
  h->watchdog = NULL;
  ml_log_flush();
  return h->dropped;
}

void ml_host_stop(ml_host_t *h) {
  request_stop(h);
}

void ml_host_free(ml_host_t *h) {
  if (!h) return;
  if (h->server) ml_server_close_all(h->server);
  close_handles(h);
  ml_app_free(h->app);   /* first: cancelling its tasks may cancel jobs of the workers */
  for (int i = 0; i < h->nretired; i++) ml_app_free(h->retired[i].app);
  /* forced: no more waits */
  ml_workers_free(h->workers, h->forced ? 0 : h->cfg.graceful_timeout);
  uv_run(&h->loop, UV_RUN_DEFAULT);   /* let close callbacks run */
  uv_loop_close(&h->loop);
  ml_log_flush();
  ml_post_free(h->post);
  ml_preload_free(h->preload);
  free(h->server);
  free(h->appdir);
  free(h);
}

/* --- the embedder's modules, calls from its threads (post.c, preload.c, events.c) ------ */

/* Before ml_host_load only: every state the host makes copies the list as it is then. */
int ml_host_preload(ml_host_t *h, const char *name, lua_CFunction open) {
  if (h->appdir) return -1;
  if (!h->preload) h->preload = ml_preload_new();
  return ml_preload_add(h->preload, name, open);
}

int ml_host_set_userdata(ml_host_t *h, void *userdata) {
  if (h->appdir) return -1;
  if (!h->preload) h->preload = ml_preload_new();
  ml_preload_set_userdata(h->preload, userdata);
  return 0;
}

void *ml_host_userdata(const ml_host_t *h) {
  return ml_preload_userdata(h->preload);
}

/* Refused from the first stop request on; the queue itself refuses once closed. */
int ml_host_post(ml_host_t *h, ml_post_cb fn, void *arg) {
  if (!fn || __atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST)) return -1;
  return ml_post_push(h->post, fn, arg);
}

int ml_host_emit(ml_host_t *h, const char *event, const char *json) {
  if (!event || !*event || __atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST)) return -1;
  return ml_events_emit(h->post, &h->app, event, json);
}
