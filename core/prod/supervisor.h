/* The supervisor of `moonlet serve --workers N` (supervisor.c): a process that never loads
 * the app. It binds one listening socket per worker slot (SO_REUSEPORT, all on host:port)
 * before anything starts, spawns a worker process per slot (this binary again, serving
 * the slot's socket: see worker.h), restarts a worker that dies, stops them all on
 * SIGTERM/SIGINT, passes SIGUSR1 on, and on SIGHUP replaces every worker by a freshly
 * loaded one without closing a socket (README "Worker processes").
 *
 *   ml_supervisor_config_t sc = { .host = "127.0.0.1", .port = 8000, .workers = 2,
 *                                 .args = serve_args, .nargs = n };
 *   ml_supervisor_t *sup = ml_supervisor_new(&sc);
 *   if (ml_supervisor_bind(sup, err, sizeof err)) ...          // a port in use: exit 2
 *   ml_supervisor_pass_fd(sup, shm_fd, "MOONLET_SHARED_FD");   // optional, before run
 *   int status = ml_supervisor_run(sup);                        // the process's exit status
 *   ml_supervisor_free(sup);
 *
 * Everything runs on the supervisor's loop, on the thread that calls ml_supervisor_run. */
#ifndef ML_SUPERVISOR_H
#define ML_SUPERVISOR_H
#include <stddef.h>
#include <uv.h>

typedef struct ml_supervisor_s ml_supervisor_t;

typedef struct {
  const char *host;          /* an IPv4 or IPv6 address */
  int port;                  /* 0: the first socket picks a free port, the others join it */
  int workers;               /* worker slots, >= 1 */
  char **args;               /* a worker's arguments after the program: "serve", APPDIR,
                              * options (without --workers); copied */
  int nargs;
  int https;                 /* 1: the workers serve TLS ("listening on https://...") */
} ml_supervisor_config_t;

/* Called on the supervisor's loop when a worker process has exited (after the
 * supervisor logged it, before any restart): slot is its slot (0..workers-1), pid its
 * process id, metrics_slot the MOONLET_METRICS_SLOT it had. */
typedef void (*ml_supervisor_exit_cb)(void *arg, int slot, int metrics_slot, int pid);

/* A supervisor (nothing bound, nothing spawned yet). cfg is copied. */
ml_supervisor_t *ml_supervisor_new(const ml_supervisor_config_t *cfg);
/* Binds and listens on every slot's socket, so a port in use fails here, before any
 * worker starts, and connections queue from now on. Returns 0, or -1 with a one-line
 * message in err. */
int ml_supervisor_bind(ml_supervisor_t *sup, char *err, size_t errlen);
/* The bound port (after ml_supervisor_bind). */
int ml_supervisor_port(const ml_supervisor_t *sup);
/* Every worker spawned from now on inherits fd (the caller's: it stays open in the
 * supervisor, which never closes it), as the descriptor named by the environment variable
 * env_name (copied). Before ml_supervisor_run. Returns 0, or -1 (env_name not a name). */
int ml_supervisor_pass_fd(ml_supervisor_t *sup, int fd, const char *env_name);
/* cb(arg, ...) on every worker exit (one hook; NULL removes it). */
void ml_supervisor_on_worker_exit(ml_supervisor_t *sup, ml_supervisor_exit_cb cb, void *arg);
/* cb(arg) on the supervisor's loop once, when the supervisor closes its own handles: the
 * last worker of a stop has exited (or ml_supervisor_free runs). The place to close the
 * caller's handles on the loop (a metrics listener), so that ml_supervisor_run returns. */
void ml_supervisor_on_stop(ml_supervisor_t *sup, void (*cb)(void *arg), void *arg);
/* The supervisor's loop, for handles of the caller's (a metrics listener, ...): they must
 * be closed, or unreferenced, for ml_supervisor_run to return. */
uv_loop_t *ml_supervisor_loop(ml_supervisor_t *sup);
/* Starts the workers and supervises them until they have all stopped. Prints "listening
 * on http://HOST:PORT" on stdout once every worker of the first generation is ready.
 * Returns the exit status for the process: 0 when a stop (SIGTERM, SIGINT) ended with
 * every worker exiting 0; 1 when one did not; 2 when a worker of the first generation
 * failed before it was ready (the app did not load: its error is on stderr already). */
int ml_supervisor_run(ml_supervisor_t *sup);
/* Closes the sockets and frees sup (after ml_supervisor_run returned, or instead). */
void ml_supervisor_free(ml_supervisor_t *sup);
#endif
