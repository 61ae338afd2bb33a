/* Several hosts in one process, driven by tests/spec/embed_spec.lua.
 *
 *   embed_hosts loop|threads [options] APPDIR...
 *
 * loop: one host per APPDIR on this program's own libuv loop (ml_host_new_on_loop), which
 * main runs; each host is freed from its stop callback and the loop must then close
 * (uv_loop_close returns 0). threads: one host per APPDIR on a loop of its own
 * (ml_host_new), each run by a thread of its own. Every host listens on a free port and
 * says "host N listening on http://127.0.0.1:PORT" on stderr; log lines come through
 * cfg.log_cb as "log: LEVEL LINE". Once the file --stop-file names exists, a thread of the
 * program stops every host (ml_host_stop, from that thread). Options: --reload,
 * --graceful-timeout S, --keep-on-stuck-stop (cfg.exit_on_stuck_stop = 0), --pool-size N.
 * SIGPIPE is the program's own (cfg.ignore_sigpipe = 0, and a handler of its own): it
 * checks that moonlet left it as it was. Exit status 0 when all went as said. */
#include "moonlet.h"
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define MAX_HOSTS 4

static ml_host_t *hosts[MAX_HOSTS];
static int nhosts, stopped;   /* stopped: on the loop's thread (loop mode) */
static const char *stop_file;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&out_lock);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fflush(stderr);
  pthread_mutex_unlock(&out_lock);
  va_end(ap);
}

static void on_sigpipe(int sig) {
  (void)sig;   /* the write that raised it fails with EPIPE: libuv closes that connection */
}

static void log_cb(int level, const char *line, void *user) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  say("log: %s %s%s", names[level & 3], line, user == &nhosts ? "" : " (wrong user)");
}

/* The embedder's own thread: stops every host once the stop file exists. */
static void *stopper(void *arg) {
  (void)arg;
  struct timespec ts = {0, 10 * 1000 * 1000};
  while (access(stop_file, F_OK) != 0) nanosleep(&ts, NULL);
  say("stopping %d host(s)", nhosts);
  for (int i = 0; i < nhosts; i++) ml_host_stop(hosts[i]);
  return NULL;
}

static int host_index(ml_host_t *h) {
  for (int i = 0; i < nhosts; i++)
    if (hosts[i] == h) return i + 1;
  return 0;
}

/* --- loop mode ----------------------------------------------------------------------- */

static void listening_cb(ml_host_t *h, int status, const char *err, void *arg) {
  (void)arg;
  if (status == 0) {
    say("host %d listening on http://127.0.0.1:%d", host_index(h), ml_host_port(h));
    return;
  }
  say("host %d: listen failed: %s", host_index(h), err);
  hosts[host_index(h) - 1] = NULL;
  ml_host_free(h);   /* from the callback: allowed */
  stopped++;
}

static void stopped_cb(ml_host_t *h, int dropped, void *arg) {
  (void)arg;
  say("host %d stopped (dropped %d)", host_index(h), dropped);
  hosts[host_index(h) - 1] = NULL;
  ml_host_free(h);
  stopped++;
}

static int run_loop_mode(ml_config_t *cfg, char **dirs, int n) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  char err[1024];
  for (int i = 0; i < n; i++) {
    ml_host_t *h = hosts[nhosts++] = ml_host_new_on_loop(cfg, &loop);
    ml_host_on_stop(h, stopped_cb, NULL);
    if (ml_host_listen(h, err, sizeof err) == 0) say("ml_host_listen did not refuse");
    if (ml_host_load(h, dirs[i], err, sizeof err) ||
        ml_host_listen_async(h, listening_cb, NULL, err, sizeof err)) {
      say("host %d: %s", i + 1, err);
      hosts[i] = NULL;
      ml_host_free(h);
      stopped++;
    }
  }
  if (hosts[0] && ml_host_run(hosts[0]) >= 0) say("ml_host_run did not refuse");
  pthread_t th;
  pthread_create(&th, NULL, stopper, NULL);
  pthread_detach(th);
  uv_run(&loop, UV_RUN_DEFAULT);   /* until every host is stopped and freed */
  int rc = uv_loop_close(&loop);
  say("%d host(s) stopped, loop closed: %d", stopped, rc);
  return rc == 0 && stopped == n ? 0 : 1;
}

/* --- threads mode -------------------------------------------------------------------- */

static void *serve(void *h) {
  int dropped = ml_host_run(h);
  say("host %d stopped (dropped %d)", host_index(h), dropped);
  return NULL;
}

static int run_threads_mode(ml_config_t *cfg, char **dirs, int n) {
  char err[1024];
  pthread_t th[MAX_HOSTS];
  for (int i = 0; i < n; i++) {
    ml_host_t *h = hosts[nhosts++] = ml_host_new(cfg);
    if (ml_host_load(h, dirs[i], err, sizeof err) || ml_host_listen(h, err, sizeof err)) {
      say("host %d: %s", i + 1, err);
      return 1;
    }
    say("host %d listening on http://127.0.0.1:%d", i + 1, ml_host_port(h));
  }
  for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, serve, hosts[i]);
  pthread_t st;
  pthread_create(&st, NULL, stopper, NULL);
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  pthread_join(st, NULL);
  for (int i = 0; i < n; i++) ml_host_free(hosts[i]);
  say("%d host(s) stopped", n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3 || (strcmp(argv[1], "loop") && strcmp(argv[1], "threads"))) {
    fprintf(stderr, "usage: embed_hosts loop|threads [options] APPDIR...\n");
    return 2;
  }
  signal(SIGPIPE, on_sigpipe);   /* the embedder's decision, not moonlet's */
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  cfg.port = 0;
  cfg.pool_size = 4;
  cfg.log_cb = log_cb;
  cfg.log_user = &nhosts;
  cfg.ignore_sigpipe = 0;
  char *dirs[MAX_HOSTS];
  int n = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--reload") == 0) cfg.reload = 1;
    else if (strcmp(argv[i], "--keep-on-stuck-stop") == 0) cfg.exit_on_stuck_stop = 0;
    else if (strcmp(argv[i], "--graceful-timeout") == 0 && i + 1 < argc)
      cfg.graceful_timeout = atof(argv[++i]);
    else if (strcmp(argv[i], "--pool-size") == 0 && i + 1 < argc)
      cfg.pool_size = atoi(argv[++i]);
    else if (strcmp(argv[i], "--stop-file") == 0 && i + 1 < argc)
      stop_file = argv[++i];
    else if (n < MAX_HOSTS)
      dirs[n++] = argv[i];
  }
  if (!stop_file || !n) {
    fprintf(stderr, "embed_hosts: --stop-file and an APPDIR are needed\n");
    return 2;
  }
  int rc = strcmp(argv[1], "loop") == 0 ? run_loop_mode(&cfg, dirs, n)
                                        : run_threads_mode(&cfg, dirs, n);
  struct sigaction sa;
  sigaction(SIGPIPE, NULL, &sa);
  say("SIGPIPE %s", sa.sa_handler == on_sigpipe ? "as the program left it" : "changed");
  return rc;
}
