/* The host: a loop, a server and an app wired together (see moonlet.h). Shutdown is
 * graceful: drain the server, wait for in-flight requests up to graceful_timeout, then
 * close every handle so ml_host_run returns with an empty loop. A stop that cannot wait
 * (the timeout ended, or it was asked for twice) drops what still runs and says how many;
 * one that the loop cannot do at all (a handler that never yields) ends the process. */
#include "moonlet.h"
#include "err.h"
#include "mem.h"
#include "app.h"
#include "server.h"
#include "dispatch.h"
#include "log.h"
#include "reload.h"
#include "shared.h"
#include "watchdog.h"
#include "workers.h"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  ml_app_t *retired[16];     /* replaced by a reload, freed when their last task ends */
  int nretired;
  uv_timer_t reaper;
  uv_async_t stop_async;
  struct sigaction old_sigint, old_sigterm;   /* given back when the stop is over */
  uv_prepare_t flush;        /* flushes the log once per loop turn */
  uv_timer_t grace;
  int signals, stopping, closed;
  int reload_pending;
  /* a stop (see request_stop): the first two are atomic, written on any thread */
  int stop_requests;         /* how many times a stop was asked for */
  uint64_t stop_deadline;    /* uv_hrtime() the stop must be done by; 0 before one */
  uint64_t grace_ns;         /* cfg.graceful_timeout */
  int dropped;               /* requests the stop cut short: ml_host_run returns it */
  int forced;                /* the stop did not wait for everything to end */
};

void ml_config_defaults(ml_config_t *cfg) {
  cfg->host = "127.0.0.1";
  cfg->port = 8000;
  cfg->log_level = ML_LOG_INFO;
  cfg->max_body = 1 << 20;
  cfg->max_header = 16 << 10;
  cfg->graceful_timeout = 10;
  cfg->header_timeout = 10;
  cfg->keepalive_timeout = 5;
  cfg->pool_size = 40;
  cfg->pool_queue = 1024;
  cfg->shared_mem = 64u << 20;
  cfg->block_warn_ms = 100;
  cfg->reload = 0;
}

static void release_signals(ml_host_t *h);

/* The end of a stop: everything still on the loop goes, so ml_host_run returns. Tasks
 * that outlive their requests (spawned ones) are cancelled here. */
static void close_handles(ml_host_t *h) {
  if (h->closed) return;
  h->closed = 1;
  release_signals(h);   /* before stop_async goes: the handler wakes the loop with it */
  ml_app_stop(h->app);
  for (int i = 0; i < h->nretired; i++) ml_app_stop(h->retired[i]);
  ml_workers_detach(h->workers);
  ml_reload_stop(h->reload);
  h->reload = NULL;
  uv_close((uv_handle_t *)&h->reaper, NULL);
  uv_close((uv_handle_t *)&h->stop_async, NULL);
  uv_close((uv_handle_t *)&h->flush, NULL);
  uv_close((uv_handle_t *)&h->grace, NULL);
}

static void drained_cb(ml_server_t *s) {
  close_handles(s->loop->data);
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

/* Ends a stop without waiting any longer: every connection closes, the requests still
 * running are dropped, and the log says how many. */
static void stop_now(ml_host_t *h) {
  char buf[64];
  int requests = ml_server_requests(h->server);
  ml_log(ML_LOG_WARN, "%s: closing %d connection(s), dropping %d request(s) still running",
         stop_reason(h, buf, sizeof buf), h->server->nconns, requests);
  h->dropped += requests;
  h->forced = 1;
  ml_server_close_all(h->server);
  close_handles(h);
}

static void grace_cb(uv_timer_t *t) {
  stop_now(t->data);
}

static void begin_stop(ml_host_t *h) {
  h->stopping = 1;
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
  uv_loop_init(&h->loop);
  h->loop.data = h;
  uv_async_init(&h->loop, &h->stop_async, stop_cb);
  h->stop_async.data = h;
  uv_prepare_init(&h->loop, &h->flush);
  uv_prepare_start(&h->flush, flush_cb);
  uv_unref((uv_handle_t *)&h->flush);
  uv_timer_init(&h->loop, &h->grace);
  h->grace.data = h;
  uv_unref((uv_handle_t *)&h->grace);
  uv_timer_init(&h->loop, &h->reaper);
  h->reaper.data = h;
  uv_unref((uv_handle_t *)&h->reaper);
  return h;
}

/* Frees the retired apps whose last task has ended. */
static void reap_cb(uv_timer_t *t) {
  ml_host_t *h = t->data;
  for (int i = 0; i < h->nretired;) {
    if (h->retired[i]->requests == 0) {   /* its spawned tasks end with it */
      ml_app_free(h->retired[i]);
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

/* --reload: load the changed code into a new app; new requests go to it, requests in
 * flight finish on the old one, which is freed when its last request ends (its spawned
 * tasks are cancelled then). A load error keeps the old code serving. */
static void reload_now(ml_host_t *h) {
  char err[1024];
  if (h->nretired == (int)(sizeof h->retired / sizeof h->retired[0])) {
    ml_log(ML_LOG_WARN, "reload: postponed, old code still has requests running");
    return;
  }
  ml_app_t *a = ml_app_new(&h->loop, h->appdir, 0, err, sizeof err);
  if (!a) {
    ml_log(ML_LOG_ERROR, "reload failed, still serving the previous code: %s", err);
    return;
  }
  ml_app_t *old = h->app;
  a->sched.workers = h->workers;   /* for pooled routes and run_in_pool */
  h->app = a;
  h->server->ctx = a;
  ml_workers_reload(h->workers);
  ml_watchdog_watch(h->watchdog, &a->sched);
  h->retired[h->nretired++] = old;
  uv_timer_start(&h->reaper, reap_cb, 0, 250);
  ml_log(ML_LOG_INFO, "reloaded %s (%d routes)", h->appdir, a->nroutes);
}

int ml_host_load(ml_host_t *h, const char *appdir, char *err, size_t errlen) {
  ml_app_t *a = ml_app_new(&h->loop, appdir, 0, err, errlen);
  if (!a) return -1;
  ml_app_free(h->app);
  h->app = a;
  free(h->appdir);
  h->appdir = ml_xstrdup(appdir);
  if (!h->workers)
    h->workers = ml_workers_new(&h->loop, appdir, h->cfg.pool_size, h->cfg.pool_queue);
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
  };
  return ml_server_listen(h->server, &h->loop, &sc, err, errlen) ? -1 : 0;
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
  if (h->cfg.reload && h->appdir && !h->reload && !h->closed) {
    h->reload = ml_reload_start(&h->loop, h->appdir, reload_cb, h);
    ml_log(ML_LOG_INFO, "watching %s for changes (--reload)", h->appdir);
  }
  while (uv_run(&h->loop, UV_RUN_DEFAULT) && h->reload_pending) {
    h->reload_pending = 0;
    if (!h->closed) reload_now(h);
  }
  for (int i = 0; i < h->nretired; i++) h->retired[i]->sched.monitor = NULL;
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
  for (int i = 0; i < h->nretired; i++) ml_app_free(h->retired[i]);
  /* forced: no more waits */
  ml_workers_free(h->workers, h->forced ? 0 : h->cfg.graceful_timeout);
  uv_run(&h->loop, UV_RUN_DEFAULT);   /* let close callbacks run */
  uv_loop_close(&h->loop);
  ml_log_flush();
  free(h->server);
  free(h->appdir);
  free(h);
}
