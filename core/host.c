/* The host: a loop, a server and an app wired together (see moonlet.h). The loop is its
 * own (ml_host_new: ml_host_run runs it) or an embedder's (ml_host_new_on_loop: moonlet
 * never runs it, so whatever would wait for the loop becomes a callback instead: the
 * startup hooks, a reload, the end of a stop, the memory's release). Starting binds
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
#include "access_log.h"
#include "dispatch.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "post.h"
#include "preload.h"
#include "reload.h"
#include "shared.h"
#include "tls.h"
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
  uv_loop_t own_loop;        /* ml_host_new's */
  uv_loop_t *loop;           /* &own_loop, or the embedder's (borrowed) */
  int borrowed;
  ml_server_t *server;
  ml_app_t *app;
  ml_workers_t *workers;     /* the pool: pooled routes' threads, shared by reloads */
  ml_workers_t *executor;    /* run_in_pool's threads, shared by reloads */
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
  uv_signal_t usr1;          /* SIGUSR1 reopens the access log (ml_host_handle_signals) */
  uv_signal_t hup;           /* SIGHUP reloads the TLS certificate (ditto) */
  char *tls_cert, *tls_key;  /* cfg.tls_cert and cfg.tls_key, copied at the bind */
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
  int held_said;             /* held_cb logged (atomic; exit_on_stuck_stop off) */
  /* a borrowed loop's: what would wait for the loop, done from callbacks instead */
  uv_timer_t defer;          /* runs defer_cb's work outside any task (DEFER_*) */
  int deferred;              /* DEFER_* bits */
  ml_host_listen_cb listen_cb;   /* ml_host_listen_async's, until the hooks end */
  void *listen_arg;
  int listen_ok;             /* the hooks' result, and their error */
  char *listen_err;
  ml_app_t *loading;         /* a reload's new app while its startup hooks run */
  int loading_ok;
  char *loading_err;
  int reload_again;          /* a change seen while loading: reload once more */
  ml_host_stop_cb stop_cb;   /* ml_host_on_stop's */
  void *stop_arg;
  int open_handles;          /* the host's handles and its server's, not closed yet */
  int freeing;               /* ml_host_free ran: the memory goes with the last handle */
  int metrics_own;           /* cfg.metrics_port and no supervisor's region: the host serves */
  int metrics_serving;       /* ... and its ml_metrics_serve worked */
  char *jobs_worker;         /* cfg.jobs_worker, copied; NULL: none */
};

enum { DEFER_LISTEN = 1, DEFER_RELOAD = 2, DEFER_RELOADED = 4 };

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
  cfg->log_cb = NULL;
  cfg->log_user = NULL;
  cfg->ignore_sigpipe = 1;
  cfg->exit_on_stuck_stop = 1;
  cfg->access_log = ML_ACCESS_TEXT;
  cfg->access_log_file = NULL;
  cfg->proxy_headers = 0;
  cfg->forwarded_allow_ips = "127.0.0.1";
  cfg->listen_fd = -1;
  cfg->metrics_port = 0;
  cfg->metrics_host = NULL;
  cfg->tls_cert = NULL;
  cfg->tls_key = NULL;
  cfg->executor_size = 128;
  cfg->jobs_worker = NULL;
  cfg->jobs_concurrency = 50;
  cfg->no_listener = 0;
}

enum { RETIRED_SERVING, RETIRED_HOOKS, RETIRED_DONE };
/* the steps of a graceful stop, in order */
enum { STOP_NONE, STOP_REQUESTS, STOP_BACKGROUND, STOP_HOOKS, STOP_DONE };

static void release_signals(ml_host_t *h);
static void watchdog_stop(ml_host_t *h);

/* The memory of a freed host goes with its last handle (see host_handle_closed_cb). */
static void host_release(ml_host_t *h) {
  ml_post_free(h->post);
  ml_preload_free(h->preload);
  free(h->server);
  free(h->appdir);
  free(h->tls_cert);
  free(h->tls_key);
  free(h->listen_err);
  free(h->loading_err);
  free(h->jobs_worker);
  free(h);
}

static void handle_gone(ml_host_t *h) {
  if (--h->open_handles == 0 && h->freeing && h->borrowed) host_release(h);
}

static void host_handle_closed_cb(uv_handle_t *handle) {
  handle_gone(handle->data);
}

static void server_closed_cb(ml_server_t *s) {
  handle_gone(s->data);
}

/* A reload's new app whose startup hooks still run goes: the host stops. */
static void cancel_loading(ml_host_t *h) {
  ml_app_free(h->loading);
  h->loading = NULL;
}

/* The end of a stop: everything still on the loop goes, so ml_host_run returns. Tasks
 * still running (spawned at load or by a startup hook, or abandoned) are cancelled here.
 * On a borrowed loop the stop callback runs last (not when ml_host_free ends the host):
 * it may free h, whose memory stays until the loop has run the close callbacks. */
static void close_handles(ml_host_t *h) {
  if (h->closed) return;
  h->closed = 1;
  release_signals(h);   /* before stop_async goes: the handler wakes the loop with it */
  cancel_loading(h);
  if (h->app) h->app->sched.background_idle_cb = NULL;
  ml_post_close(h->post);   /* what was posted runs now, while the app still does */
  ml_app_stop(h->app);
  for (int i = 0; i < h->nretired; i++) ml_app_stop(h->retired[i].app);
  ml_workers_detach(h->workers);
  ml_workers_detach(h->executor);
  ml_reload_stop(h->reload);
  h->reload = NULL;
  if (h->metrics_serving) ml_metrics_serve_close();
  uv_close((uv_handle_t *)&h->reaper, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->stop_async, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->flush, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->usr1, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->hup, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->grace, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->step, host_handle_closed_cb);
  uv_close((uv_handle_t *)&h->defer, host_handle_closed_cb);
  if (!h->borrowed) return;
  watchdog_stop(h);   /* the stop is over: nothing left to enforce (ml_host_run's, else) */
  if (h->stop_cb && !h->freeing) h->stop_cb(h, h->dropped, h->stop_arg);
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
  ml_host_t *h = s->background_idle_arg;
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
      s->background_idle_arg = h;
      return;
    }
    h->stop_step = STOP_HOOKS;
    ml_lifespan_start(h->app, ML_LIFESPAN_SHUTDOWN, shutdown_done, h);
  } else if (h->stop_step == STOP_DONE) {
    close_handles(h);
  }
}

static void drained_cb(ml_server_t *s) {
  next_step(s->data, STOP_BACKGROUND);
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
  if (!h->server) {
    close_handles(h);
    return;
  }
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
  cancel_loading(h);
  if (!h->server) {   /* a borrowed loop's host stopped before it listened: nothing to wait for */
    close_handles(h);
    return;
  }
  h->stop_step = STOP_REQUESTS;
  if (h->cfg.no_listener) ml_log(ML_LOG_INFO, "shutting down");   /* a jobs worker: no port */
  else ml_log(ML_LOG_INFO, "shutting down: %d connection(s) open", h->server->nconns);
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
 * nothing on the loop will run again. The process ends here (cfg.exit_on_stuck_stop), or
 * the log says so once and the stop waits for the handler. */
static void held_cb(void *ctx, const char *route, uint64_t held_ns) {
  ml_host_t *h = ctx;
  char buf[64];
  int quit = h->cfg.exit_on_stuck_stop;
  if (!quit && __atomic_exchange_n(&h->held_said, 1, __ATOMIC_SEQ_CST)) return;
  ml_log(ML_LOG_ERROR, "%s: %s holds the event loop (for %.0f ms) and cannot be stopped: "
         "%s %d request(s) still running", stop_reason(h, buf, sizeof buf), route,
         (double)held_ns / 1e6, quit ? "exiting, dropping" : "waiting for it and its "
         "(exit_on_stuck_stop is off):", ml_server_requests(h->server));
  if (quit) _exit(1);
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

/* logrotate moved the access log: reopened here, on the loop, not in a signal handler */
static void usr1_cb(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  ml_log_access_reopen();
}

/* SIGHUP: renewed certificates (certbot's deploy hook, say). A process without TLS has
 * nothing it could reload in place (code reloads are --workers' or --reload's): it says
 * so rather than die, SIGHUP's default. */
static void hup_cb(uv_signal_t *sig, int signum) {
  (void)signum;
  ml_host_t *h = sig->data;
  char err[512];
  if (!h->tls_cert) {
    ml_log(ML_LOG_INFO, "SIGHUP: nothing to reload (use --workers for code reloads)");
  } else if (ml_host_reload_tls(h, err, sizeof err) == 0) {
    ml_log(ML_LOG_INFO, "SIGHUP: TLS certificate reloaded from %s", h->tls_cert);
  } else {
    ml_log(ML_LOG_ERROR, "SIGHUP: %s; still serving the certificate loaded before", err);
  }
}

int ml_host_reload_tls(ml_host_t *h, char *err, size_t errlen) {
  if (!h->tls_cert || !h->server)
    return ml_err(err, errlen, "the host does not serve TLS (cfg.tls_cert, --tls-cert)");
  if (h->closed) return ml_err(err, errlen, "the host has stopped");
  SSL_CTX *ctx = ml_tls_server_ctx_new(h->tls_cert, h->tls_key, err, errlen);
  if (!ctx) return -1;
  ml_server_set_tls(h->server, ctx);
  return 0;
}

static void flush_cb(uv_prepare_t *p) {
  (void)p;
  ml_log_flush();
}

static void defer_cb(uv_timer_t *t);

/* A host on loop, or on a loop of its own if loop is NULL (ml_host_new). */
static ml_host_t *host_new(const ml_config_t *cfg, uv_loop_t *loop) {
  ml_host_t *h = ml_xcalloc(1, sizeof *h);
  if (cfg->ignore_sigpipe) signal(SIGPIPE, SIG_IGN);
  h->cfg = *cfg;
  h->jobs_worker = cfg->jobs_worker ? ml_xstrdup(cfg->jobs_worker) : NULL;
  h->cfg.jobs_worker = h->jobs_worker;
  h->grace_ns = (uint64_t)(cfg->graceful_timeout * 1e9);
  ml_log_configure(cfg->log_level, cfg->log_cb, cfg->log_user);
  ml_shared_configure(cfg->shared_mem);
  /* response schemas checked (runtime.lua), errors in 500s (error_page.lua) */
  ml_core_set_dev_mode(cfg->reload || cfg->debug);
  ml_core_set_proxy(cfg->proxy_headers, cfg->forwarded_allow_ips);
  h->borrowed = loop != NULL;
  if (!loop) {
    uv_loop_init(&h->own_loop);
    loop = &h->own_loop;
  }
  h->loop = loop;
  uv_async_init(h->loop, &h->stop_async, stop_cb);
  h->post = ml_post_new(h->loop);
  uv_prepare_init(h->loop, &h->flush);
  uv_prepare_start(&h->flush, flush_cb);
  uv_signal_init(h->loop, &h->usr1);
  uv_signal_init(h->loop, &h->hup);
  uv_unref((uv_handle_t *)&h->flush);
  uv_timer_init(h->loop, &h->grace);
  uv_unref((uv_handle_t *)&h->grace);
  uv_timer_init(h->loop, &h->step);
  uv_timer_init(h->loop, &h->reaper);
  uv_unref((uv_handle_t *)&h->reaper);
  uv_timer_init(h->loop, &h->defer);
  h->stop_async.data = h->flush.data = h->grace.data = h->step.data = h->reaper.data = h;
  h->defer.data = h->usr1.data = h->hup.data = h;
  h->open_handles = 8;
  return h;
}

ml_host_t *ml_host_new(const ml_config_t *cfg) {
  return host_new(cfg, NULL);
}

ml_host_t *ml_host_new_on_loop(const ml_config_t *cfg, struct uv_loop_s *loop) {
  return loop ? host_new(cfg, loop) : NULL;
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

/* Runs what a borrowed loop's host does outside any task and outside the watcher's
 * callbacks: the end of ml_host_listen_async, a reload and its end. */
static void defer(ml_host_t *h, int what) {
  h->deferred |= what;
  uv_timer_start(&h->defer, defer_cb, 0, 0);
}

/* The watcher saw a change. Loading runs app.lua, which may wait (moonlet.db at load
 * time runs the loop): never inside a libuv callback, so stop the loop and let
 * ml_host_run reload between two runs. On a borrowed loop app.lua may not wait
 * (ML_APP_NO_WAIT): it loads from defer_cb. */
static void reload_cb(void *ctx) {
  ml_host_t *h = ctx;
  if (h->borrowed) {
    if (h->server && !h->starting) defer(h, DEFER_RELOAD);
    else h->reload_pending = 1;   /* once the startup hooks have ended */
    return;
  }
  h->reload_pending = 1;
  uv_stop(h->loop);
}

/* The copy of the first line of a startup hook's error, logged with its traceback. */
static char *startup_error(const char *msg) {
  ml_log(ML_LOG_ERROR, "on_startup hook failed: %s", msg);
  char err[1024];
  ml_err(err, sizeof err, "on_startup hook failed: %.*s", (int)strcspn(msg, "\n"), msg);
  return ml_xstrdup(err);
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
  char *e = startup_error(msg);
  snprintf(st->err, st->errlen, "%s", e);
  free(e);
}

/* Runs a's startup hooks, running the loop until they end; it serves whatever else is on
 * it meanwhile (during a reload, the old code's requests). Not from a libuv callback.
 * Returns 0, or -1 with a one-line message in err: a hook failed (its traceback is
 * logged), or the host began to stop meanwhile (a's hooks are then cancelled with it). */
static int run_startup(ml_host_t *h, ml_app_t *a, char *err, size_t errlen) {
  startup_t st = { 0, 0, err, errlen };
  ml_lifespan_start(a, ML_LIFESPAN_STARTUP, startup_done, &st);
  while (!st.done && !h->stopping) uv_run(h->loop, UV_RUN_ONCE);
  if (st.done) return st.ok ? 0 : -1;
  ml_app_stop(a);
  return ml_err(err, errlen, "stopping before the startup hooks finished");
}

/* a, loaded and started, replaces the app: new requests go to it, requests in flight
 * finish on the old one, which then runs its shutdown hooks and is freed (see reap_cb). */
static void reload_swap(ml_host_t *h, ml_app_t *a) {
  ml_app_t *old = h->app;
  h->app = a;
  h->server->ctx = a;
  ml_workers_reload(h->workers);
  ml_workers_reload(h->executor);
  ml_watchdog_watch(h->watchdog, &a->sched);
  h->retired[h->nretired].app = old;
  h->retired[h->nretired++].state = RETIRED_SERVING;
  uv_timer_start(&h->reaper, reap_cb, 0, 250);
  ml_log(ML_LOG_INFO, "reloaded %s (%d routes)", h->appdir, a->nroutes);
}

static int retired_full(ml_host_t *h) {
  if (h->nretired < (int)(sizeof h->retired / sizeof h->retired[0])) return 0;
  ml_log(ML_LOG_WARN, "reload: postponed, old code still has requests running");
  return 1;
}

/* cfg.jobs_worker: the app table gets _jobs_worker = { queues =, concurrency =,
 * graceful_timeout = }, which runtime.lifespan reads to start the queues' consumers after
 * the startup hooks and to drain them before the shutdown hooks (lua/moonlet/jobs.lua). */
static void jobs_mark(ml_host_t *h, ml_app_t *a) {
  if (!h->jobs_worker) return;
  lua_State *L = a->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->app_ref);
  if (lua_istable(L, -1)) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, h->jobs_worker);
    lua_setfield(L, -2, "queues");
    lua_pushinteger(L, h->cfg.jobs_concurrency);
    lua_setfield(L, -2, "concurrency");
    lua_pushnumber(L, h->cfg.graceful_timeout);
    lua_setfield(L, -2, "graceful_timeout");
    lua_setfield(L, -2, "_jobs_worker");
  }
  lua_pop(L, 1);
}

/* a's pooled routes go to the pool, its run_in_pool jobs to the executor; a worker
 * host's app learns its queues. Called for every app the host runs. */
static void use_threads(ml_host_t *h, ml_app_t *a) {
  a->sched.workers = h->workers;
  a->sched.executor = h->executor;
  jobs_mark(h, a);
}

static int app_flags(ml_host_t *h) {
  return h->borrowed ? ML_APP_NO_WAIT : 0;
}

/* --reload: load the changed code into a new app and run its startup hooks, then swap it
 * in (reload_swap). A load error or a failed startup hook keeps the old code serving. */
static void reload_now(ml_host_t *h) {
  char err[1024];
  if (retired_full(h)) return;
  ml_app_t *a = ml_app_new(h->loop, h->appdir, app_flags(h), h->preload, err, sizeof err);
  if (a) use_threads(h, a);
  if (!a || run_startup(h, a, err, sizeof err)) {
    if (!h->stopping)
      ml_log(ML_LOG_ERROR, "reload failed, still serving the previous code: %s", err);
    ml_app_free(a);
    return;
  }
  reload_swap(h, a);
}

/* --- a borrowed loop: the same, from callbacks ---------------------------------------- */

static void reload_started(ml_app_t *a, int ok, const char *msg, void *ctx) {
  ml_host_t *h = ctx;
  (void)a;
  h->loading_ok = ok;
  if (!ok) h->loading_err = startup_error(msg);
  defer(h, DEFER_RELOADED);   /* not here, inside the hooks' task */
}

/* reload_now without running the loop: the new app's hooks run, reload_started ends it. */
static void reload_begin(ml_host_t *h) {
  char err[1024];
  if (h->stopping || h->closed) return;
  if (h->loading) {   /* the one before still starts: this change is loaded after it */
    h->reload_again = 1;
    return;
  }
  if (retired_full(h)) return;
  ml_app_t *a = ml_app_new(h->loop, h->appdir, app_flags(h), h->preload, err, sizeof err);
  if (!a) {
    ml_log(ML_LOG_ERROR, "reload failed, still serving the previous code: %s", err);
    return;
  }
  use_threads(h, a);
  h->loading = a;
  ml_lifespan_start(a, ML_LIFESPAN_STARTUP, reload_started, h);
}

static void reload_end(ml_host_t *h) {
  ml_app_t *a = h->loading;
  if (!a) return;   /* the host stopped meanwhile */
  h->loading = NULL;
  if (h->loading_ok) {
    reload_swap(h, a);
  } else {
    ml_log(ML_LOG_ERROR, "reload failed, still serving the previous code: %s", h->loading_err);
    ml_app_free(a);
  }
  free(h->loading_err);
  h->loading_err = NULL;
  if (h->reload_again) {
    h->reload_again = 0;
    reload_begin(h);
  }
}

static int listen_finish(ml_host_t *h, int rc, char *err, size_t errlen);
static void watchdog_start(ml_host_t *h);

/* ml_host_listen_async's hooks ended: accept (or not) and say so. */
static void listen_end(ml_host_t *h) {
  char err[1024] = "";
  if (!h->listen_ok) snprintf(err, sizeof err, "%s", h->listen_err);
  int rc = listen_finish(h, h->listen_ok ? 0 : -1, err, sizeof err);
  if (rc == 0) watchdog_start(h);
  /* a stop asked for meanwhile begins now, a change seen meanwhile is loaded now */
  if (__atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST)) uv_async_send(&h->stop_async);
  else if (rc == 0 && h->reload_pending) defer(h, DEFER_RELOAD);
  h->reload_pending = 0;
  ml_host_listen_cb cb = h->listen_cb;
  h->listen_cb = NULL;
  cb(h, rc, rc ? err : NULL, h->listen_arg);   /* last: it may free h */
}

static void defer_cb(uv_timer_t *t) {
  ml_host_t *h = t->data;
  int what = h->deferred;
  h->deferred = 0;
  if (h->closed) return;
  if (what & DEFER_RELOADED) reload_end(h);
  if (what & DEFER_RELOAD) reload_begin(h);
  if (what & DEFER_LISTEN) listen_end(h);   /* last: its callback may free h */
}

static void listen_started(ml_app_t *a, int ok, const char *msg, void *ctx) {
  ml_host_t *h = ctx;
  (void)a;
  h->listen_ok = ok;
  if (!ok) h->listen_err = startup_error(msg);
  defer(h, DEFER_LISTEN);
}

/* --reload and the app does not load (app.lua, or an on_startup hook): the server serves
 * the error instead (moonlet.load_error) and the watcher loads the fix once it is saved,
 * as uvicorn's reloader waits. Returns the stand-in, NULL if there is none. */
static ml_app_t *serve_error(ml_host_t *h, const char *appdir, const char *err) {
  struct stat st;   /* no directory at all: nothing to wait for */
  if (!h->cfg.reload || stat(appdir, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
  ml_log(ML_LOG_ERROR, "the app failed to load, answering every request with the error "
         "until the code is fixed (--reload): %s", err);
  return ml_app_failed(h->loop, appdir, err);
}

/* --reload: the watcher starts before the code is loaded, so that an edit saved while
 * the app loads (or before ml_host_run) is a change from what it loaded. */
static void watch_start(ml_host_t *h, const char *appdir) {
  if (!h->cfg.reload || h->reload || h->closed) return;
  struct stat st;
  if (stat(appdir, &st) != 0 || !S_ISDIR(st.st_mode)) return;
  h->reload = ml_reload_start(h->loop, appdir, reload_cb, h);
  ml_log(ML_LOG_INFO, "watching %s for changes (--reload)", appdir);
}

int ml_host_load(ml_host_t *h, const char *appdir, char *err, size_t errlen) {
  if (h->server || h->closed)
    return ml_err(err, errlen, "ml_host_load: the host listens already, or has stopped");
  /* metrics record from before the app loads: what app.lua opens is counted, and so is
   * what it closes */
  if (h->cfg.metrics_port && !h->metrics_own) {
    int rc = ml_metrics_region_own(err, errlen);
    if (rc < 0) return -1;
    h->metrics_own = rc == 0;   /* a worker's are the supervisor's to serve */
  }
  watch_start(h, appdir);
  ml_app_t *a = ml_app_new(h->loop, appdir, app_flags(h), h->preload, err, errlen);
  if (!a) a = serve_error(h, appdir, err);
  if (!a) return -1;
  ml_app_free(h->app);
  h->app = a;
  free(h->appdir);
  h->appdir = ml_xstrdup(appdir);
  if (!h->workers) {   /* no thread starts before a job needs it */
    h->workers = ml_workers_new(h->loop, appdir, h->preload, h->cfg.pool_size,
                                h->cfg.pool_queue, ML_WORKERS_POOL);
    h->executor = ml_workers_new(h->loop, appdir, h->preload, h->cfg.executor_size,
                                 h->cfg.pool_queue, ML_WORKERS_EXECUTOR);
  }
  use_threads(h, a);
  return 0;
}

/* Binds the port (first, so a port in use is said before any hook runs; connecting is
 * refused until the hooks are done). Returns 0, or -1 with a message in err. */
static int bind_server(ml_host_t *h, char *err, size_t errlen) {
  if (!h->app) return ml_err(err, errlen, "no app loaded");
  if (h->server || h->closed)
    return ml_err(err, errlen, "the host listens already, or has stopped");
  h->server = ml_xcalloc(1, sizeof *h->server);
  h->server->dispatch = ml_dispatch;
  h->server->abort = ml_dispatch_abort;
  h->server->body = ml_dispatch_body;
  h->server->ctx = h->app;
  h->server->data = h;
  ml_server_config_t sc = {
      .host = h->cfg.host,
      .port = h->cfg.port,
      .max_body = h->cfg.max_body,
      .max_header = h->cfg.max_header,
      .header_timeout_ms = (uint64_t)(h->cfg.header_timeout * 1000),
      .keepalive_timeout_ms = (uint64_t)(h->cfg.keepalive_timeout * 1000),
      .ws_max_message = h->cfg.ws_max_message,
      .access_log = h->cfg.access_log,
      .listen_fd = h->cfg.listen_fd,
      .metrics = ml_metrics_on(),   /* off: not even a call per request */
  };
  if (h->cfg.access_log && h->cfg.access_log_file &&
      ml_log_access_open(h->cfg.access_log_file, err, errlen) < 0) {
    if (h->cfg.listen_fd >= 0) close(h->cfg.listen_fd);   /* ours from here on (moonlet.h) */
    return -1;
  }
  SSL_CTX *tls = NULL;
  if (h->cfg.tls_cert || h->cfg.tls_key) {
    if (!h->cfg.tls_cert || !h->cfg.tls_key) {
      ml_err(err, errlen, "%s", h->cfg.tls_cert ? "--tls-cert needs --tls-key (cfg.tls_key)"
                                                : "--tls-key needs --tls-cert (cfg.tls_cert)");
    } else {
      tls = ml_tls_server_ctx_new(h->cfg.tls_cert, h->cfg.tls_key, err, errlen);
    }
    if (!tls) {
      if (h->cfg.listen_fd >= 0) close(h->cfg.listen_fd);   /* ours from here on (moonlet.h) */
      return -1;
    }
    h->tls_cert = ml_xstrdup(h->cfg.tls_cert);
    h->tls_key = ml_xstrdup(h->cfg.tls_key);
  }
  int rc = 0;
  if (h->cfg.no_listener) ml_server_init(h->server, h->loop, &sc);   /* drains at once */
  else rc = ml_server_bind(h->server, h->loop, &sc, err, errlen);
  ml_server_set_tls(h->server, tls);   /* the server owns it, bound or not */
  if (h->server->handles_open) {   /* its memory goes when they are closed */
    h->open_handles++;
    h->server->on_closed = server_closed_cb;
  }
  if (rc == 0 && h->metrics_own) {
    rc = ml_metrics_serve(h->loop, h->cfg.metrics_host ? h->cfg.metrics_host : h->cfg.host,
                          h->cfg.metrics_port, err, errlen);
    h->metrics_serving = rc == 0;
  }
  return rc;
}

/* The startup hooks ended (rc 0) or failed (-1, err says why): with --reload a failed
 * app is replaced by its stand-in; then the server accepts. Returns 0 or -1 (err). */
static int listen_finish(ml_host_t *h, int rc, char *err, size_t errlen) {
  h->starting = 0;
  ml_app_t *stand_in = rc && !h->stopping ? serve_error(h, h->appdir, err) : NULL;
  if (stand_in) {
    use_threads(h, stand_in);
    ml_app_free(h->app);
    h->app = stand_in;
    h->server->ctx = stand_in;
    rc = 0;
  }
  if (rc) return -1;
  if (h->cfg.no_listener) return 0;
  return ml_server_listen(h->server, err, errlen) ? -1 : 0;
}

int ml_host_listen(ml_host_t *h, char *err, size_t errlen) {
  if (h->borrowed)
    return ml_err(err, errlen, "ml_host_listen: the host is on the embedder's loop "
                  "(ml_host_new_on_loop), which moonlet does not run: use ml_host_listen_async");
  if (bind_server(h, err, errlen)) return -1;
  h->starting = 1;
  return listen_finish(h, run_startup(h, h->app, err, errlen), err, errlen);
}

int ml_host_listen_async(ml_host_t *h, ml_host_listen_cb cb, void *arg, char *err,
                         size_t errlen) {
  if (!h->borrowed)
    return ml_err(err, errlen, "ml_host_listen_async: the host has a loop of its own "
                  "(ml_host_new): use ml_host_listen");
  if (!cb) return ml_err(err, errlen, "ml_host_listen_async: no callback");
  if (bind_server(h, err, errlen)) return -1;
  h->starting = 1;
  h->listen_cb = cb;
  h->listen_arg = arg;
  ml_lifespan_start(h->app, ML_LIFESPAN_STARTUP, listen_started, h);
  return 0;
}

void ml_host_on_stop(ml_host_t *h, ml_host_stop_cb cb, void *arg) {
  h->stop_cb = cb;
  h->stop_arg = arg;
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
  /* always: a logrotate postrotate's SIGUSR1 must not kill a moonlet logging to stderr
   * (the default action); without --access-log-file there is nothing to reopen */
  if (uv_signal_start(&h->usr1, usr1_cb, SIGUSR1) == 0) uv_unref((uv_handle_t *)&h->usr1);
  if (uv_signal_start(&h->hup, hup_cb, SIGHUP) == 0) uv_unref((uv_handle_t *)&h->hup);
  return 0;
}

/* The watchdog watches the current app from the moment the host serves; its thread also
 * ends a stop the loop cannot do (held_cb). */
static void watchdog_start(ml_host_t *h) {
  if (!h->app || h->watchdog) return;
  h->watchdog = ml_watchdog_start(&h->app->sched, h->cfg.block_warn_ms);
  ml_watchdog_enforce(h->watchdog, &h->stop_deadline, held_cb, h);
}

static void watchdog_stop(ml_host_t *h) {
  if (!h->watchdog) return;
  for (int i = 0; i < h->nretired; i++) h->retired[i].app->sched.monitor = NULL;
  ml_watchdog_stop(h->watchdog);   /* and the current app's */
  h->watchdog = NULL;
}

int ml_host_run(ml_host_t *h) {
  if (h->borrowed) {
    ml_log(ML_LOG_ERROR, "ml_host_run: the host is on the embedder's loop "
           "(ml_host_new_on_loop): the embedder runs it (uv_run)");
    return UV_EINVAL;
  }
  watchdog_start(h);
  /* a stop asked for while the startup hooks ran */
  if (__atomic_load_n(&h->stop_requests, __ATOMIC_SEQ_CST)) uv_async_send(&h->stop_async);
  /* a change seen while the app loaded or started is reloaded at once */
  int pending = h->reload_pending;
  while (pending || (uv_run(h->loop, UV_RUN_DEFAULT) && h->reload_pending)) {
    pending = h->reload_pending = 0;
    if (!h->stopping) reload_now(h);
  }
  watchdog_stop(h);
  ml_log_flush();
  return h->dropped;
}

void ml_host_stop(ml_host_t *h) {
  request_stop(h);
}

/* Own loop: runs it until everything closed, then frees all. Borrowed loop: the memory
 * goes in the last close callback (handle_gone), when the embedder's loop runs them. */
void ml_host_free(ml_host_t *h) {
  if (!h) return;
  h->freeing = 1;
  if (h->server) ml_server_close_all(h->server);
  close_handles(h);
  watchdog_stop(h);
  ml_app_free(h->app);   /* first: cancelling its tasks may cancel jobs of the workers */
  h->app = NULL;
  for (int i = 0; i < h->nretired; i++) ml_app_free(h->retired[i].app);
  h->nretired = 0;
  /* forced: no more waits; else both share graceful_timeout */
  double wait = h->forced ? 0 : h->cfg.graceful_timeout;
  uint64_t t0 = uv_hrtime();
  ml_workers_free(h->workers, wait);
  wait -= (double)(uv_hrtime() - t0) / 1e9;
  ml_workers_free(h->executor, wait > 0 ? wait : 0);
  h->workers = NULL;
  h->executor = NULL;
  ml_log_flush();
  if (h->borrowed) {
    if (h->open_handles == 0) host_release(h);
    return;
  }
  uv_run(h->loop, UV_RUN_DEFAULT);   /* let close callbacks run */
  uv_loop_close(h->loop);
  ml_log_flush();
  host_release(h);
}

/* --- the embedder's modules, calls from its threads (post.c, preload.c, events.c) ------ */

/* Before ml_host_load only: every state the host makes copies the list as it is then. */
int ml_host_preload(ml_host_t *h, const char *name, lua_CFunction open) {
  if (h->appdir) return -1;
  if (!h->preload) h->preload = ml_preload_new();
  return ml_preload_add(h->preload, name, open);
}

int ml_host_preload_ffi(ml_host_t *h, const char *name, const char *cdef, const char *ctype,
                        const void *api) {
  if (h->appdir) return -1;
  if (!h->preload) h->preload = ml_preload_new();
  return ml_preload_add_ffi(h->preload, name, cdef, ctype, api);
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
