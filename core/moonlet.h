/* moonlet — embedding API.
 *
 *   ml_config_t cfg;
 *   ml_config_defaults(&cfg);
 *   cfg.port = 0;                          // any free port
 *   ml_host_t *h = ml_host_new(&cfg);
 *   char err[512];
 *   if (ml_host_load(h, "apps/hello", err, sizeof err) ||
 *       ml_host_listen(h, err, sizeof err)) { fprintf(stderr, "%s\n", err); ... }
 *   ml_host_handle_signals(h);             // optional: SIGINT/SIGTERM stop gracefully
 *   ml_host_run(h);                        // until ml_host_stop (any thread) or a signal
 *   ml_host_free(h);
 *
 * A host owns one libuv loop and runs it on the thread that calls ml_host_run. Creating a
 * host ignores SIGPIPE for the process (a write to a closed socket must not kill it).
 * A stop is never held up by a handler that never yields: when the stop is due (after
 * graceful_timeout, or at once when asked twice) and a handler still holds the loop, the
 * watchdog's thread logs it and ends the process with _exit(1), since nothing else can. */
#ifndef MOONLET_H
#define MOONLET_H
#include <stddef.h>

#define MOONLET_VERSION "0.1.0"

typedef struct {
  const char *host;            /* "127.0.0.1"; an IPv4 or IPv6 address */
  int port;                    /* 8000; 0 picks a free port (see ml_host_port) */
  int log_level;               /* 0 debug, 1 info (access log), 2 warn, 3 error */
  size_t max_body;             /* request body limit in bytes (1 MiB) -> 413 */
  size_t max_header;           /* request line + headers limit (16 KiB) -> 431 */
  size_t ws_max_message;       /* WebSocket message limit in bytes (1 MiB) -> close 1009 */
  double graceful_timeout;     /* seconds a graceful stop may take in all (10) */
  double header_timeout;       /* seconds for a request's header block to arrive (10) */
  double keepalive_timeout;    /* seconds an idle keep-alive connection is kept (5) */
  int pool_size;               /* threads for { pool = true } routes and run_in_pool (40) */
  int pool_queue;              /* jobs that may wait for a busy pool (1024), then 503 */
  size_t shared_mem;           /* bytes all moonlet.shared dictionaries may hold (64 MiB) */
  double block_warn_ms;        /* warn when a coroutine holds the loop this long (100) */
  int reload;                  /* reload the app when its .lua files change (0); implies
                                * the development mode, as debug does */
  int debug;                   /* development mode (0): a 500 for a Lua error carries the
                                * error and its traceback (HTML for a browser, else JSON),
                                * response schemas are checked. Never in production. */
} ml_config_t;

typedef struct ml_host_s ml_host_t;

void ml_config_defaults(ml_config_t *cfg);
ml_host_t *ml_host_new(const ml_config_t *cfg);

/* Loads APPDIR/app.lua. Returns 0, or -1 with a one-line message in err. */
int ml_host_load(ml_host_t *h, const char *appdir, char *err, size_t errlen);
/* Binds the listening socket, runs the app's on_startup hooks (running the loop until they
 * end; connecting is refused meanwhile), then accepts connections. Returns 0, or -1 with a
 * one-line message in err: the port cannot be bound (before any hook runs), or a startup
 * hook failed (its traceback is logged). */
int ml_host_listen(ml_host_t *h, char *err, size_t errlen);
/* The bound port (useful after port 0). */
int ml_host_port(const ml_host_t *h);
/* SIGINT and SIGTERM call ml_host_stop (from a signal handler of its own, not the loop).
 * One host per process; the previous handlers come back when its stop is over. Returns
 * 0, or -1 if sigaction failed. */
int ml_host_handle_signals(ml_host_t *h);
/* Serves until stopped. Returns 0, or how much the stop cut short when graceful_timeout
 * ended or the stop was asked for again: requests dropped + background tasks abandoned,
 * + 1 if the on_shutdown hooks did not run or did not finish. */
int ml_host_run(ml_host_t *h);
/* Starts a graceful stop, all within graceful_timeout from now: no new connections,
 * in-flight requests finish, then the background tasks requests spawned (moonlet.spawn
 * from a handler), then the app's on_shutdown hooks run; then ml_host_run returns. Called
 * again, stops at once. Safe from any thread and from a signal handler; asked for while
 * ml_host_listen runs the startup hooks, it begins when ml_host_run does. */
void ml_host_stop(ml_host_t *h);
void ml_host_free(ml_host_t *h);
#endif
