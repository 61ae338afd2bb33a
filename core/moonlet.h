/* moonlet — embedding API.
 *
 * A host on a loop of its own (ml_host_run runs it on the calling thread):
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
 * A host owns one libuv loop and runs it on the thread that calls ml_host_run, or lives
 * on the embedder's loop (ml_host_new_on_loop, below). Creating a host ignores SIGPIPE
 * for the process unless cfg.ignore_sigpipe is 0 (see there).
 * A stop is never held up by a handler that never yields: when the stop is due (after
 * graceful_timeout, or at once when asked twice) and a handler still holds the loop, the
 * watchdog's thread logs it and ends the process with _exit(1), since nothing else can
 * (cfg.exit_on_stuck_stop; 0: it logs it once and the stop waits for the handler). */
#ifndef MOONLET_H
#define MOONLET_H
#include <lua.h>
#include <stddef.h>

struct uv_loop_s;   /* libuv's uv_loop_t */

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
  int pool_size;               /* threads for { pool = true } routes (40); run_in_pool has
                                * threads of its own (executor_size) */
  int pool_queue;              /* jobs that may wait for a busy pool (1024), then 503; the
                                * executor's queue holds as many */
  size_t shared_mem;           /* bytes of the shared-memory region all moonlet.shared
                                * dictionaries live in (64 MiB); allocated at the first
                                * dictionary use, with the size configured then */
  double block_warn_ms;        /* warn when a coroutine holds the loop this long (100) */
  int reload;                  /* reload the app when its .lua files change (0); implies
                                * the development mode, as debug does */
  int debug;                   /* development mode (0): a 500 for a Lua error carries the
                                * error and its traceback (HTML for a browser, else JSON),
                                * response schemas are checked. Never in production. */
  /* --- logging, signals, several hosts (README "Embedding") ---
   * log_level, log_cb, log_user, the development mode (debug, reload) and shared_mem are
   * the process's, not the host's: ml_host_new* sets them for every host, the one created
   * last wins (shared_mem: the last one before the first dictionary use). moonlet.shared
   * dictionaries are the process's too (one name, one dictionary, for all hosts).
   * Everything else is the host's own. */
  void (*log_cb)(int level, const char *line, void *user);
                               /* NULL (stderr): every log line, access log included, goes
                                * to log_cb instead: level as log_level, the line without
                                * timestamp, level or newline (a traceback has newlines
                                * inside). Called on any moonlet thread (the loop's, pool
                                * threads, the watchdog's), one call at a time under a lock
                                * of moonlet's: it must not call into moonlet. */
  void *log_user;              /* log_cb's user */
  int ignore_sigpipe;          /* 1: ml_host_new* ignores SIGPIPE process-wide (SIG_IGN,
                                * never restored). 0: moonlet leaves signals alone and the
                                * embedder must ignore or handle SIGPIPE: libuv writes with
                                * write(2), which raises it when a client is gone. */
  int exit_on_stuck_stop;      /* 1: _exit(1) when a stop cannot happen (see above); 0: the
                                * stop logs it once and waits for the handler */
  int access_log;              /* 1 text (default), 2 JSON lines, 0 none; written at the info
                                * level, through log_cb when there is one */
  const char *access_log_file; /* NULL (stderr), or the file access log lines are appended
                                * to (opened by ml_host_listen; the process's, as log_cb);
                                * ml_host_handle_signals makes SIGUSR1 reopen it */
  int proxy_headers;           /* 1: req.client and req.scheme come from X-Forwarded-For,
                                * X-Forwarded-Proto or Forwarded when the peer is trusted */
  const char *forwarded_allow_ips; /* the trusted peers: "127.0.0.1" (default), a comma list
                                * of addresses, or "*" for any; both the process's */
  int listen_fd;               /* -1 (default): ml_host_listen binds host:port. >= 0: a TCP
                                * socket already bound (and maybe listening) that the host
                                * serves on instead, binding nothing (host and port are
                                * then unused; ml_host_port says the socket's port): how
                                * `moonlet serve --workers` hands each worker its socket,
                                * and how a program given a socket by its parent (systemd
                                * socket activation, say) serves it. The host takes the
                                * descriptor over from ml_host_listen on: it closes it
                                * when it stops listening, or when ml_host_listen fails.
                                * Other processes may hold the same socket and accept on
                                * it too (the kernel hands each connection to one). */
  int metrics_port;            /* 0 (off), or the port ml_host_listen(_async) serves Prometheus
                                * metrics on (GET /metrics, README "Metrics"), on a listening
                                * socket of its own; the metrics are the process's: one host
                                * a process may serve them */
  const char *metrics_host;    /* NULL: cfg.host; the address metrics_port listens on (it
                                * must live until ml_host_listen returns) */
  const char *tls_cert;        /* NULL (plain HTTP), or a PEM file: the server's certificate
                                * and then its chain; with tls_key the host serves HTTPS only
                                * (TLS 1.2 and 1.3, ALPN http/1.1, README "TLS"). Both or
                                * neither; ml_host_listen fails when the files cannot be
                                * loaded or do not match. Copied by ml_host_listen (a reload
                                * reads the same paths again: ml_host_reload_tls) */
  const char *tls_key;         /* NULL, or the PEM private key of tls_cert */
  int executor_size;           /* threads for moonlet.run_in_pool (128), apart from the
                                * pool_size threads of { pool = true } routes, as FastAPI
                                * keeps run_in_executor apart from `def` routes; started
                                * when jobs need them, each with a Lua state of its own.
                                * Its queue holds pool_queue jobs too, then 503. */
  const char *jobs_worker;     /* NULL (none), or a comma list of moonlet.jobs queue names
                                * this host runs the tasks of (`moonlet worker --queue`,
                                * `serve --worker`; README "Background jobs"): once the
                                * startup hooks ran, the app's queues of those names are
                                * consumed on the loop; a stop first drains them (running
                                * jobs finish within graceful_timeout), then runs the
                                * shutdown hooks. Copied by ml_host_new */
  int jobs_concurrency;        /* jobs a queue of jobs_worker runs at once (50) */
  int no_listener;             /* 1: ml_host_listen binds no HTTP port (`moonlet worker`):
                                * it runs the startup hooks (and serves metrics_port) only;
                                * ml_host_port is then 0. Default 0 */
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
/* SIGINT and SIGTERM call ml_host_stop (from a signal handler of its own, not the loop);
 * SIGUSR1 reopens cfg.access_log_file (on the loop; without one it is ignored, not
 * fatal); SIGHUP reloads the TLS certificate and key (ml_host_reload_tls, on the loop;
 * without TLS it logs that there is nothing to reload, never fatal). One host per process; the previous handlers come back when its stop is over. Returns
 * 0, or -1 if sigaction failed. */
int ml_host_handle_signals(ml_host_t *h);
/* Reads cfg.tls_cert and cfg.tls_key again (the same paths: renewed files) into a new
 * TLS context, which new connections use from now on; open connections keep the one they
 * were made with, undisturbed. Returns 0, or -1 with a one-line message in err: the host
 * does not serve TLS (or does not listen yet), or the files cannot be loaded or do not
 * match; the certificate in use then stays. On the loop's thread (from any other, go
 * through ml_host_post). */
int ml_host_reload_tls(ml_host_t *h, char *err, size_t errlen);
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
/* Own loop: ends the host now (a stop not done yet drops what still runs), waits for the
 * pool threads (up to graceful_timeout), closes the loop and frees everything. Borrowed
 * loop: see below. */
void ml_host_free(ml_host_t *h);

/* --- the embedder's loop ---------------------------------------------------------------
 *   ml_host_t *h = ml_host_new_on_loop(&cfg, loop);
 *   ml_host_on_stop(h, stopped_cb, arg);               // optional
 *   if (ml_host_load(h, "apps/hello", err, sizeof err) ||
 *       ml_host_listen_async(h, listening_cb, arg, err, sizeof err)) ...
 *   uv_run(loop, UV_RUN_DEFAULT);                       // the embedder's, as always
 *
 * The host lives on the embedder's loop, driven by its uv_run: moonlet never runs that
 * loop, so ml_host_run refuses (returns UV_EINVAL) and ml_host_listen says to use
 * ml_host_listen_async. app.lua may not wait at load time (a moonlet primitive at its
 * top level raises: wait in app:on_startup). Every moonlet function on such a host is
 * called on the loop's thread, except ml_host_stop (any thread, signal handlers too).
 * The pool threads and the watchdog's thread stay moonlet's.
 * Handles moonlet adds to the loop: an async (the stop's wake-up; it keeps the loop alive
 * while the host lives), a prepare (log flushing) and timers (the stop's steps, the
 * reload), unreferenced where they must not keep it alive; the listening socket, a
 * prepare and a check measuring the loop's stalls (which turn on UV_METRICS_IDLE_TIME
 * for the loop), one TCP handle and one timer per connection; the app's tasks' timers;
 * an async for the pool's results; --reload's fs_event handles and timer; with
 * cfg.metrics_port, the metrics' listening socket and its connections' handles; and the
 * handles of what the app's code starts (HTTP client, databases, ...). After ml_host_free
 * they are all closing: once the loop has run their close callbacks (uv_run returns when
 * nothing else is on it) uv_loop_close succeeds, and the host's memory is gone. */
typedef void (*ml_host_listen_cb)(ml_host_t *h, int status, const char *err, void *arg);
typedef void (*ml_host_stop_cb)(ml_host_t *h, int dropped, void *arg);

/* A host on loop, which the embedder runs (NULL if loop is NULL). */
ml_host_t *ml_host_new_on_loop(const ml_config_t *cfg, struct uv_loop_s *loop);
/* ml_host_listen without waiting: binds now (ml_host_port is then the bound port; a port
 * in use returns -1 with err, and cb is never called), starts the app's startup hooks and
 * returns 0. When they have ended, on the loop: the host accepts connections and cb(h,
 * 0, NULL, arg) runs; or a hook failed (its traceback is logged) and cb(h, -1, "one-line
 * message", arg) runs, the host accepts nothing (free it). A stop asked for meanwhile
 * begins right after cb; cb never runs if the host is freed first. Borrowed loop only. */
int ml_host_listen_async(ml_host_t *h, ml_host_listen_cb cb, void *arg, char *err,
                         size_t errlen);
/* cb(h, dropped, arg) runs on the loop when a stop is over (dropped: what ml_host_run
 * would return); the host's handles are closing then. It may call ml_host_free. Not
 * called when ml_host_free itself ends the host. Borrowed loop only. */
void ml_host_on_stop(ml_host_t *h, ml_host_stop_cb cb, void *arg);
/* ml_host_free on a borrowed loop, on the loop's thread, outside moonlet's callbacks or
 * from cb above: ends the host as on an own loop, never runs the loop; the memory goes
 * when the loop has run the close callbacks. */

/* --- the embedder's C functions in Lua, calls from its threads --------------------------
 * Which Lua states run at the same time: the loop's state runs on the thread that runs the
 * loop (ml_host_run), one state at a time; every pool thread (cfg.pool_size of them, made
 * as pooled routes need them) and every executor thread (cfg.executor_size, made as
 * run_in_pool needs them) has a state of its own, running at the same time as the loop's
 * and as each other's. A --reload makes new states (the loop's at once, each pool or
 * executor thread's before its next job) while the old loop state still finishes its
 * requests. A preloaded module's functions may therefore run on several threads at once:
 * whatever C state they share must be thread-safe (a mutex, atomics). */

/* Makes `require "name"` in every Lua state of h (the loop's, each pool or executor
 * thread's, the states of every --reload) call open(name) the first time that state
 * requires it, as package.preload does: open returns the module (a table of C functions,
 * usually). open runs on the thread of the state it is called in. The user pointer (ml_host_set_userdata)
 * is open's upvalue 1 (lua_touserdata(L, lua_upvalueindex(1))), and ml_lua_userdata(L)
 * gives it to any C function of any of h's states. Call before ml_host_load, on the thread
 * that made h; name is copied. Returns 0, or -1: called after ml_host_load, name NULL or
 * empty or one of moonlet's own ("moonlet", "moonlet.*", "cjson"), open NULL. Called again
 * with the same name, the later open wins. */
int ml_host_preload(ml_host_t *h, const char *name, lua_CFunction open);
/* ml_host_preload for C functions the JIT calls at full speed: `require "name"` returns
 * the embedder's struct api seen through LuaJIT's FFI as a `ctype *`, after ffi.cdef(cdef)
 * in that state (once per state; cdef declares ctype and what its members use):
 *   struct hostapi { int (*one)(void); double (*scale)(double); };
 *   static const struct hostapi api = { one, scale };
 *   ml_host_preload_ffi(h, "hostapi", "struct hostapi { int (*one)(void); "
 *                       "double (*scale)(double); };", "struct hostapi", &api);
 *   -- Lua: local hostapi = require "hostapi"; local n = hostapi.one()
 * A call through a function-pointer member compiles into the JIT's trace, where a
 * lua_CFunction's call ends the trace (it costs a trace exit, ~1,000 instructions: README
 * "Embedding"). The FFI's rules apply: numbers convert, a `const char *` result needs
 * ffi.string, 64-bit integers come back as cdata. The functions run on the thread of the
 * state that calls them, several at once (see above). cdef and ctype are copied; api must
 * stay valid until ml_host_free returns. Same rules as ml_host_preload otherwise: before
 * ml_host_load; -1 for a reserved or empty name or a NULL argument; same name: later wins. */
int ml_host_preload_ffi(ml_host_t *h, const char *name, const char *cdef, const char *ctype,
                        const void *api);
/* The embedder's pointer for its modules (see ml_host_preload); moonlet never reads nor
 * frees it, and it must stay valid while h's states run (until ml_host_free returns).
 * Before ml_host_load only: returns 0, or -1 when called after it. */
int ml_host_set_userdata(ml_host_t *h, void *userdata);
/* The pointer given to ml_host_set_userdata (NULL if none). Any thread. */
void *ml_host_userdata(const ml_host_t *h);
/* The embedder's pointer, from a C function running in any Lua state of a host (NULL in
 * a state no host made, or when none was set). On the state's own thread. */
void *ml_lua_userdata(lua_State *L);

typedef void (*ml_post_cb)(void *arg);
/* Runs fn(arg) on the loop's thread, soon: callbacks run in the order they were posted
 * (from one thread; posts from several threads interleave), each exactly once, outside
 * any Lua code; posts made while the loop is busy are taken together (one wake-up). fn
 * may stop the host and post again (that runs on a later turn), never free it nor run the
 * loop (ml_host_run, ml_host_load, ml_host_listen). Callable from any thread,
 * the loop's included, from the moment ml_host_new returns until ml_host_free is called
 * (no thread may be inside ml_host_post or ml_host_emit once it is). Returns 0, or -1 once
 * a stop has been asked for (ml_host_stop, a signal): then fn is never called. A callback
 * posted before that runs, at the latest when the stop ends (or in ml_host_free). arg is
 * the caller's: moonlet only passes it to fn. */
int ml_host_post(ml_host_t *h, ml_post_cb fn, void *arg);
/* Calls the function the app registered with app:on_event(event, fn) as a coroutine on
 * the loop (fn may sleep, query a database, notify SSE or WebSocket handlers through a
 * moonlet.cond, write moonlet.shared), with json decoded: a JSON text (NUL-terminated,
 * strict RFC 8259), or NULL for nil. The app serving when the event arrives gets it (after
 * a --reload, the new code). An event the app has no handler for is logged at debug level;
 * an error in fn is logged with its traceback. Any thread, as ml_host_post, through which
 * it goes: events keep their order. event and json are copied. Returns 0, or -1: a stop
 * was asked for, event NULL or empty, json not one JSON text (logged as a warning). */
int ml_host_emit(ml_host_t *h, const char *event, const char *json);

/* Threads and ownership, function by function (libuv's rule: a handle's functions on its
 * loop's thread, unless said otherwise):
 *   ml_config_defaults          any thread; fills the caller's struct.
 *   ml_host_new                 any thread; cfg is copied (its strings are not: cfg.host
 *                               must live until ml_host_listen returns); the caller owns h
 *                               and frees it with ml_host_free.
 *   ml_host_preload,            the thread that made h, before ml_host_load.
 *   ml_host_preload_ffi,
 *   ml_host_set_userdata
 *   ml_host_load, ml_host_listen, ml_host_handle_signals, ml_host_run
 *                               the thread that runs the loop (the one that made h, or the
 *                               one it is handed to); appdir is copied, err is the caller's.
 *   ml_host_reload_tls          the loop's thread, once ml_host_listen(_async) bound.
 *   ml_host_port, ml_host_userdata   any thread.
 *   ml_host_stop                any thread, a signal handler too.
 *   ml_host_post, ml_host_emit  any thread (see above).
 *   ml_host_free                the loop's thread, after ml_host_run returned (or instead of
 *                               it); no other thread may use h then. It frees what h made:
 *                               loop, states, pool and executor threads (waiting up to
 *                               graceful_timeout in all for their handlers to return), the
 *                               user pointer excepted. */
#endif
