/* The supervisor of --workers (see supervisor.h). Its loop holds: the signal watchers,
 * one restart timer per slot, and per worker process a uv_process_t and the read end of
 * its readiness pipe. It never loads the app, never accepts: the slots' sockets are only
 * held open, so connections queue in them whichever worker is (re)starting.
 *
 * Generations: the workers started together (at start, on SIGHUP) are one generation,
 * numbered from 1; `gen` is the one serving, `next` the one starting (0: none). When every
 * worker of `next` has written its ready byte, `next` becomes `gen` and the previous
 * generation gets SIGTERM (a graceful stop: it finishes its requests, accepts no more).
 * A worker of `next` that exits before that fails the whole start: the first one ends the
 * supervisor (exit 2), a reload's is abandoned (its other workers stopped, `gen` serves
 * on). A worker of `gen` that exits is restarted on its slot, with a backoff when it keeps
 * dying. A reload asked for while workers of another generation are still alive (starting
 * or stopping) waits until they are gone: at most two generations are ever alive, which
 * keeps MOONLET_METRICS_SLOT (slot + gen % 2 * N) unique. A failed reload's number is used
 * again by the next one for the same reason.
 *
 * Ownership: a worker_t is freed in the close callback of the last of its two handles;
 * the slots' sockets stay open until a stop begins (SIGTERM, SIGINT; close_slots) or
 * ml_supervisor_free, the passed descriptors (the caller's) until the caller closes them. */
#include "supervisor.h"
#include "err.h"
#include "list.h"
#include "log.h"
#include "mem.h"
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

extern char **environ;

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 10000
#define LIVED_LONG_MS 1000   /* a worker that lived this long was not crash-looping */
#define LISTEN_BACKLOG 4096  /* the kernel caps it at net.core.somaxconn */

enum { W_STARTING, W_READY, W_STOPPING };             /* worker_t.state */
enum { PHASE_STARTING, PHASE_SERVING, PHASE_STOPPING };   /* the supervisor's */

typedef struct worker_s {
  uv_process_t proc;
  uv_pipe_t ready;           /* the readiness pipe's read end */
  ml_supervisor_t *sup;
  ml_list_t link;            /* in sup->workers while the process runs */
  int slot, gen, metrics_slot;
  int state;
  int handles;               /* proc and ready, not closed yet */
  int ready_open;
  uint64_t started_ms;
} worker_t;

typedef struct {
  int fd;                    /* the slot's listening socket */
  worker_t *w;               /* the serving generation's worker, NULL while it restarts */
  uv_timer_t restart;
  uint64_t backoff_ms;
} slot_t;

typedef struct {
  int fd;
  char *env;                 /* "NAME=" */
} passed_fd_t;

struct ml_supervisor_s {
  uv_loop_t loop;
  char *host;
  int port, n;
  int https;                 /* the workers serve TLS: "listening on https://" */
  char **argv;               /* exe, args..., NULL */
  slot_t *slots;
  passed_fd_t *passed;
  int npassed;
  ml_list_t workers;         /* running processes, of any generation */
  int gen, next;             /* see the top */
  int phase;
  int reload_wanted;
  int stop_asked;
  int exit_status;           /* the run's: 1 once a worker exits badly during the stop */
  uv_signal_t sig[4];        /* TERM, INT, HUP, USR1 */
  uv_prepare_t flush;
  int closed;                /* close_all ran */
  ml_supervisor_exit_cb exit_cb;
  void (*stop_cb)(void *arg);  /* ml_supervisor_on_stop's */
  void *stop_arg;
  void *exit_arg;
};

static const int watched[4] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};

static void spawn_generation(ml_supervisor_t *sup, int gen);

/* --- sockets -------------------------------------------------------------------------- */

static int sock_addr(const char *host, int port, struct sockaddr_storage *addr) {
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)addr) == 0) return 0;
  return uv_ip6_addr(host, port, (struct sockaddr_in6 *)addr);
}

static int addr_len(const struct sockaddr_storage *a) {
  return a->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* A TCP socket bound to addr (close-on-exec: uv_spawn hands it on explicitly),
 * SO_REUSEPORT when reuseport. Returns the fd, or a negative errno. */
static int sock_bind(const struct sockaddr_storage *addr, int reuseport) {
  int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int on = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0) ||
      bind(fd, (const struct sockaddr *)addr, (socklen_t)addr_len(addr)) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

static int sock_port(int fd) {
  struct sockaddr_storage a;
  socklen_t len = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) return -1;
  return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                       : ((struct sockaddr_in *)&a)->sin_port);
}

/* A probe without SO_REUSEPORT comes first: SO_REUSEPORT alone would let these sockets
 * join another process's of the same user on the port (a second supervisor) and share
 * its connections silently, where a port in use must be an error. The probe also picks
 * port 0's port, then goes; the slots' sockets bind to that port. */
int ml_supervisor_bind(ml_supervisor_t *sup, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  if (sock_addr(sup->host, sup->port, &addr) < 0)
    return ml_err(err, errlen, "invalid --host address '%s' (use an IPv4 or IPv6 address)",
                  sup->host);
  int fd = sock_bind(&addr, 0);
  if (fd < 0) goto fail;
  int port = sock_port(fd);
  close(fd);
  if (port <= 0) goto fail;
  sock_addr(sup->host, port, &addr);
  for (int i = 0; i < sup->n; i++) {
    fd = sock_bind(&addr, 1);
    if (fd < 0) goto fail;
    sup->slots[i].fd = fd;
    if (listen(fd, LISTEN_BACKLOG) < 0) {
      fd = -errno;
      goto fail;
    }
  }
  sup->port = port;
  return 0;
fail:
  for (int i = 0; i < sup->n; i++) {
    if (sup->slots[i].fd >= 0) close(sup->slots[i].fd);
    sup->slots[i].fd = -1;
  }
  return ml_err(err, errlen, "cannot listen on %s:%d: %s", sup->host, sup->port,
                fd < 0 ? uv_strerror(fd) : "no port");
}

int ml_supervisor_port(const ml_supervisor_t *sup) {
  return sup->port;
}

/* --- workers -------------------------------------------------------------------------- */

static void worker_handle_closed_cb(uv_handle_t *h) {
  worker_t *w = h->data;
  if (--w->handles == 0) free(w);
}

static void ready_close(worker_t *w) {
  if (!w->ready_open) return;
  w->ready_open = 0;
  uv_close((uv_handle_t *)&w->ready, worker_handle_closed_cb);
}

static void worker_signal(worker_t *w, int signum) {
  uv_process_kill(&w->proc, signum);
}

/* SIGTERM to every running worker of generation gen (all of them for gen -1) not asked
 * already; again: to those asked already too (a second SIGTERM stops a worker at once). */
static void stop_workers(ml_supervisor_t *sup, int gen, int again) {
  ml_list_each(l, &sup->workers) {
    worker_t *w = ml_list_item(l, worker_t, link);
    if ((gen >= 0 && w->gen != gen) || (w->state == W_STOPPING && !again)) continue;
    w->state = W_STOPPING;
    worker_signal(w, SIGTERM);
  }
}

static int count_workers(ml_supervisor_t *sup, int gen, int state) {
  int n = 0;
  ml_list_each(l, &sup->workers) {
    worker_t *w = ml_list_item(l, worker_t, link);
    if ((gen < 0 || w->gen == gen) && (state < 0 || w->state == state)) n++;
  }
  return n;
}

/* Runs the reload asked for, if nothing is in its way (see the top). */
static void maybe_reload(ml_supervisor_t *sup) {
  if (!sup->reload_wanted || sup->phase != PHASE_SERVING || sup->next) return;
  if (count_workers(sup, -1, -1) != count_workers(sup, sup->gen, -1)) return;
  sup->reload_wanted = 0;
  ml_log(ML_LOG_INFO, "reload: starting generation %d", sup->gen + 1);
  spawn_generation(sup, sup->gen + 1);
}

static void close_all(ml_supervisor_t *sup) {
  if (sup->closed) return;
  sup->closed = 1;
  for (int i = 0; i < 4; i++) uv_close((uv_handle_t *)&sup->sig[i], NULL);
  for (int i = 0; i < sup->n; i++) uv_close((uv_handle_t *)&sup->slots[i].restart, NULL);
  uv_close((uv_handle_t *)&sup->flush, NULL);
  if (sup->stop_cb) sup->stop_cb(sup->stop_arg);
}

/* The generation `next` is complete: it serves, the one before stops. */
static void generation_ready(ml_supervisor_t *sup) {
  int old = sup->gen;
  sup->gen = sup->next;
  sup->next = 0;
  ml_list_each(l, &sup->workers) {
    worker_t *w = ml_list_item(l, worker_t, link);
    if (w->gen != sup->gen) continue;
    slot_t *s = &sup->slots[w->slot];
    s->w = w;
    s->backoff_ms = 0;
    uv_timer_stop(&s->restart);
  }
  if (sup->phase == PHASE_STARTING) {
    sup->phase = PHASE_SERVING;
    int v6 = strchr(sup->host, ':') != NULL;
    ml_log(ML_LOG_INFO, "%d worker(s) serving", sup->n);
    ml_log_flush();
    printf("listening on %s://%s%s%s:%d\n", sup->https ? "https" : "http", v6 ? "[" : "",
           sup->host, v6 ? "]" : "", sup->port);
    fflush(stdout);
  } else {
    ml_log(ML_LOG_INFO, "reload: generation %d ready, stopping generation %d", sup->gen, old);
    stop_workers(sup, old, 0);
  }
  maybe_reload(sup);
}

static void ready_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char byte[8];
  (void)h, (void)size;
  *buf = uv_buf_init(byte, sizeof byte);
}

static void ready_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  worker_t *w = stream->data;
  if (nread == 0) return;
  ml_supervisor_t *sup = w->sup;
  ready_close(w);   /* one byte says it all; EOF without it: the exit callback tells */
  if (nread < 0 || w->state != W_STARTING) return;
  w->state = W_READY;
  if (w->gen == sup->next) {
    if (count_workers(sup, sup->next, W_READY) == sup->n) generation_ready(sup);
  } else if (w->gen == sup->gen) {
    ml_log(ML_LOG_INFO, "worker %d (pid %d) restarted", w->slot, w->proc.pid);
  }
}

/* "exited with status 3" or "killed by signal 9" into buf. */
static const char *how(char *buf, size_t len, int64_t status, int term_signal) {
  if (term_signal) snprintf(buf, len, "killed by signal %d (%s)", term_signal, strsignal(term_signal));
  else snprintf(buf, len, "exited with status %d", (int)status);
  return buf;
}

static void restart_cb(uv_timer_t *t);

static void worker_exit_cb(uv_process_t *p, int64_t status, int term_signal) {
  worker_t *w = p->data;
  ml_supervisor_t *sup = w->sup;
  ml_list_remove(&w->link);
  ready_close(w);
  uv_close((uv_handle_t *)&w->proc, worker_handle_closed_cb);
  uint64_t lived = uv_now(&sup->loop) - w->started_ms;
  int clean = status == 0 && term_signal == 0;
  char what[96];
  how(what, sizeof what, status, term_signal);
  int pid = p->pid;
  if (sup->exit_cb) sup->exit_cb(sup->exit_arg, w->slot, w->metrics_slot, pid);
  if (sup->phase == PHASE_STOPPING) {
    if (!clean && sup->exit_status == 0) sup->exit_status = 1;
    ml_log(clean ? ML_LOG_INFO : ML_LOG_WARN, "worker %d (pid %d) %s", w->slot, pid, what);
  } else if (w->state == W_STOPPING) {   /* a replaced or abandoned generation's */
    ml_log(clean ? ML_LOG_INFO : ML_LOG_WARN, "worker %d (pid %d) of generation %d %s",
           w->slot, pid, w->gen, what);
  } else if (w->gen == sup->next && sup->phase == PHASE_STARTING) {
    ml_log(ML_LOG_ERROR, "worker %d (pid %d) %s before it was ready: stopping", w->slot, pid,
           what);
    sup->phase = PHASE_STOPPING;
    sup->exit_status = 2;
    stop_workers(sup, -1, 0);
  } else if (w->gen == sup->next) {
    ml_log(ML_LOG_ERROR, "reload: worker %d (pid %d) of generation %d %s before it was ready; "
           "generation %d keeps serving", w->slot, pid, w->gen, what, sup->gen);
    stop_workers(sup, sup->next, 0);
    sup->next = 0;
  } else {   /* the serving generation's: restart it on its slot */
    slot_t *s = &sup->slots[w->slot];
    if (s->w == w) s->w = NULL;
    if (lived >= LIVED_LONG_MS) s->backoff_ms = 0;
    else s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
    ml_log(ML_LOG_ERROR, "worker %d (pid %d) %s; restarting%s", w->slot, pid, what,
           s->backoff_ms ? " after a backoff" : "");
    if (s->backoff_ms) ml_log(ML_LOG_WARN, "worker %d: next start in %.1f s (it lived %.1f s)",
                              w->slot, (double)s->backoff_ms / 1000, (double)lived / 1000);
    uv_timer_start(&s->restart, restart_cb, s->backoff_ms, 0);
  }
  if (sup->phase == PHASE_STOPPING) {
    if (ml_list_empty(&sup->workers)) close_all(sup);
  } else {
    maybe_reload(sup);
  }
}

/* "NAME=value" in a new string. */
static char *env_entry(const char *name, long value) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s=%ld", name, value);
  return ml_xstrdup(buf);
}

static int ours(const char *entry) {
  static const char *const names[] = {"MOONLET_LISTEN_FD=", "MOONLET_READY_FD=", "MOONLET_WORKER=",
                                      "MOONLET_METRICS_SLOT=", "MOONLET_SUPERVISOR_PID="};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strncmp(entry, names[i], strlen(names[i])) == 0) return 1;
  return 0;
}

/* Starts the worker of generation gen on slot. Returns it, or NULL (logged). */
static worker_t *spawn_worker(ml_supervisor_t *sup, int slot, int gen) {
  worker_t *w = ml_xcalloc(1, sizeof *w);
  w->sup = sup;
  w->slot = slot;
  w->gen = gen;
  w->metrics_slot = slot + (gen % 2) * sup->n;
  w->proc.data = w->ready.data = w;
  uv_pipe_init(&sup->loop, &w->ready, 0);
  w->handles = 1;
  w->ready_open = 1;
  /* descriptors: 0 /dev/null, 1-2 as ours, 3 the socket, 4 the ready pipe, then the passed ones */
  int nstdio = 5 + sup->npassed;
  uv_stdio_container_t *stdio = ml_xcalloc((size_t)nstdio, sizeof *stdio);
  stdio[0].flags = UV_IGNORE;   /* /dev/null */
  for (int i = 1; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = sup->slots[slot].fd;
  stdio[4].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[4].data.stream = (uv_stream_t *)&w->ready;
  size_t nenv = 0;
  while (environ[nenv]) nenv++;
  char **env = ml_xcalloc(nenv + 6 + (size_t)sup->npassed, sizeof *env);
  size_t e = 0, fresh = 0;
  for (size_t i = 0; i < nenv; i++)
    if (!ours(environ[i])) env[e++] = environ[i];
  fresh = e;
  env[e++] = env_entry("MOONLET_LISTEN_FD", 3);
  env[e++] = env_entry("MOONLET_READY_FD", 4);
  env[e++] = env_entry("MOONLET_WORKER", slot);
  env[e++] = env_entry("MOONLET_METRICS_SLOT", w->metrics_slot);
  env[e++] = env_entry("MOONLET_SUPERVISOR_PID", (long)getpid());
  for (int i = 0; i < sup->npassed; i++) {
    stdio[5 + i].flags = UV_INHERIT_FD;
    stdio[5 + i].data.fd = sup->passed[i].fd;
    char buf[128];
    snprintf(buf, sizeof buf, "%s%d", sup->passed[i].env, 5 + i);
    env[e++] = ml_xstrdup(buf);
  }
  uv_process_options_t opt = {
      .exit_cb = worker_exit_cb,
      .file = sup->argv[0],
      .args = sup->argv,
      .env = env,
      .stdio_count = nstdio,
      .stdio = stdio,
  };
  int rc = uv_spawn(&sup->loop, &w->proc, &opt);
  for (size_t i = fresh; i < e; i++) free(env[i]);
  free(env);
  free(stdio);
  if (rc < 0) {
    ml_log(ML_LOG_ERROR, "worker %d: cannot start %s: %s", slot, sup->argv[0], uv_strerror(rc));
    /* a failed uv_spawn's handle is closed all the same; w goes with both handles */
    w->handles++;
    ready_close(w);
    uv_close((uv_handle_t *)&w->proc, worker_handle_closed_cb);
    return NULL;
  }
  w->handles++;
  w->started_ms = uv_now(&sup->loop);
  ml_list_push(&sup->workers, &w->link);
  uv_read_start((uv_stream_t *)&w->ready, ready_alloc_cb, ready_read_cb);
  ml_log(ML_LOG_DEBUG, "worker %d (pid %d) of generation %d started", slot, w->proc.pid, gen);
  return w;
}

/* Starts a whole generation; a worker that cannot even be spawned fails it at once. */
static void spawn_generation(ml_supervisor_t *sup, int gen) {
  sup->next = gen;
  for (int i = 0; i < sup->n; i++) {
    if (spawn_worker(sup, i, gen)) continue;
    if (sup->phase == PHASE_STARTING) {
      sup->phase = PHASE_STOPPING;
      sup->exit_status = 2;
      stop_workers(sup, -1, 0);
      if (ml_list_empty(&sup->workers)) close_all(sup);
    } else {
      ml_log(ML_LOG_ERROR, "reload: generation %d failed; generation %d keeps serving", gen,
             sup->gen);
      stop_workers(sup, gen, 0);
      sup->next = 0;
    }
    return;
  }
}

static void restart_cb(uv_timer_t *t) {
  ml_supervisor_t *sup = t->data;
  slot_t *s = ml_list_item(t, slot_t, restart);
  if (sup->phase != PHASE_SERVING || s->w) return;
  int slot = (int)(s - sup->slots);
  s->w = spawn_worker(sup, slot, sup->gen);
  if (!s->w) {
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
    uv_timer_start(&s->restart, restart_cb, s->backoff_ms, 0);
  }
}

/* --- signals -------------------------------------------------------------------------- */

/* At a stop no worker will accept again. Held open, the sockets would take connections
 * into their queues until the supervisor exits (a graceful stop lasts as long as its
 * longest request: an event stream holds it --graceful-timeout) and then reset them, after
 * a load balancer had sent its request: a POST it may not retry is lost. Closed, once the
 * workers have closed their copies too (the first thing their stop does), the port refuses
 * connections and a load balancer tries another host. */
static void close_slots(ml_supervisor_t *sup) {
  for (int i = 0; i < sup->n; i++) {
    if (sup->slots[i].fd >= 0) close(sup->slots[i].fd);
    sup->slots[i].fd = -1;
  }
}

static void signal_cb(uv_signal_t *h, int signum) {
  ml_supervisor_t *sup = h->data;
  if (signum == SIGUSR1) {
    ml_list_each(l, &sup->workers) worker_signal(ml_list_item(l, worker_t, link), SIGUSR1);
    return;
  }
  if (signum == SIGHUP) {
    if (sup->phase == PHASE_STOPPING) return;
    if (sup->reload_wanted || sup->next ||
        count_workers(sup, -1, -1) != count_workers(sup, sup->gen, -1))
      ml_log(ML_LOG_INFO, "reload: SIGHUP during a reload: one more reload when it is over");
    sup->reload_wanted = 1;
    maybe_reload(sup);
    return;
  }
  /* SIGTERM, SIGINT: a graceful stop; asked again, the workers' stop becomes immediate */
  sup->stop_asked++;
  if (sup->stop_asked == 1)
    ml_log(ML_LOG_INFO, "shutting down: stopping %d worker(s)", count_workers(sup, -1, -1));
  else
    ml_log(ML_LOG_WARN, "asked to stop again: the workers stop now");
  if (sup->phase != PHASE_STOPPING) {
    sup->phase = PHASE_STOPPING;
    for (int i = 0; i < sup->n; i++) uv_timer_stop(&sup->slots[i].restart);
    close_slots(sup);
  }
  stop_workers(sup, -1, sup->stop_asked > 1);
  if (ml_list_empty(&sup->workers)) close_all(sup);
}

static void flush_cb(uv_prepare_t *p) {
  (void)p;
  ml_log_flush();
}

/* --- the supervisor ------------------------------------------------------------------- */

ml_supervisor_t *ml_supervisor_new(const ml_supervisor_config_t *cfg) {
  ml_supervisor_t *sup = ml_xcalloc(1, sizeof *sup);
  sup->host = ml_xstrdup(cfg->host);
  sup->https = cfg->https;
  sup->port = cfg->port;
  sup->n = cfg->workers > 0 ? cfg->workers : 1;
  sup->slots = ml_xcalloc((size_t)sup->n, sizeof *sup->slots);
  for (int i = 0; i < sup->n; i++) sup->slots[i].fd = -1;
  char exe[PATH_MAX];
  size_t len = sizeof exe;
  /* this binary again (/proc/self/exe), read now: a rebuild later changes no worker */
  if (uv_exepath(exe, &len) < 0) snprintf(exe, sizeof exe, "/proc/self/exe");
  sup->argv = ml_xcalloc((size_t)cfg->nargs + 2, sizeof *sup->argv);
  sup->argv[0] = ml_xstrdup(exe);
  for (int i = 0; i < cfg->nargs; i++) sup->argv[i + 1] = ml_xstrdup(cfg->args[i]);
  ml_list_init(&sup->workers);
  uv_loop_init(&sup->loop);
  for (int i = 0; i < 4; i++) {
    uv_signal_init(&sup->loop, &sup->sig[i]);
    sup->sig[i].data = sup;
  }
  for (int i = 0; i < sup->n; i++) {
    uv_timer_init(&sup->loop, &sup->slots[i].restart);
    sup->slots[i].restart.data = sup;
  }
  uv_prepare_init(&sup->loop, &sup->flush);
  uv_unref((uv_handle_t *)&sup->flush);
  return sup;
}

int ml_supervisor_pass_fd(ml_supervisor_t *sup, int fd, const char *env_name) {
  if (!env_name || !*env_name || strchr(env_name, '=') || fd < 0) return -1;
  sup->passed = ml_xrealloc(sup->passed, (size_t)(sup->npassed + 1) * sizeof *sup->passed);
  char *e = ml_xmalloc(strlen(env_name) + 2);
  sprintf(e, "%s=", env_name);
  sup->passed[sup->npassed].fd = fd;
  sup->passed[sup->npassed++].env = e;
  return 0;
}

void ml_supervisor_on_worker_exit(ml_supervisor_t *sup, ml_supervisor_exit_cb cb, void *arg) {
  sup->exit_cb = cb;
  sup->exit_arg = arg;
}

void ml_supervisor_on_stop(ml_supervisor_t *sup, void (*cb)(void *arg), void *arg) {
  sup->stop_cb = cb;
  sup->stop_arg = arg;
}

uv_loop_t *ml_supervisor_loop(ml_supervisor_t *sup) {
  return &sup->loop;
}

int ml_supervisor_run(ml_supervisor_t *sup) {
  signal(SIGPIPE, SIG_IGN);   /* stdout may be a pipe whose reader left (as in a worker) */
  for (int i = 0; i < 4; i++) uv_signal_start(&sup->sig[i], signal_cb, watched[i]);
  uv_prepare_start(&sup->flush, flush_cb);
  ml_log(ML_LOG_INFO, "supervisor (pid %d): starting %d worker(s)", (int)getpid(), sup->n);
  spawn_generation(sup, 1);
  uv_run(&sup->loop, UV_RUN_DEFAULT);
  ml_log_flush();
  return sup->exit_status;
}

void ml_supervisor_free(ml_supervisor_t *sup) {
  if (!sup) return;
  close_all(sup);
  uv_run(&sup->loop, UV_RUN_DEFAULT);
  uv_loop_close(&sup->loop);
  for (int i = 0; i < sup->n; i++)
    if (sup->slots[i].fd >= 0) close(sup->slots[i].fd);
  for (int i = 0; sup->argv[i]; i++) free(sup->argv[i]);
  for (int i = 0; i < sup->npassed; i++) free(sup->passed[i].env);
  free(sup->passed);
  free(sup->argv);
  free(sup->slots);
  free(sup->host);
  free(sup);
}
