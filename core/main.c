/* The moonlet CLI: a thin layer over the embedding API in moonlet.h. */
#include "moonlet.h"
#include "log.h"
#include "access_log.h"
#include "lstate.h"
#include "metrics.h"
#include "sched.h"
#include "supervisor.h"
#include "worker.h"
#include "shared.h"
#include "tls.h"
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char usage[] =
    "usage: moonlet serve APPDIR [options]   serve the app in APPDIR (APPDIR/app.lua)\n"
    "       moonlet worker APPDIR --queue NAME [options]  run the tasks of the app's job queue\n"
    "                                        NAME (README \"Background jobs\")\n"
    "       moonlet test [PATH ...]          run Lua spec files with busted (default: tests/spec or .)\n"
    "       moonlet new NAME                 create directory NAME: an app, its spec, a README\n"
    "       moonlet routes APPDIR            print the app's routes: method, path, mode, handler\n"
    "       moonlet version                  print the version\n"
    "\n"
    "serve options:\n"
    "  --host ADDR             address to listen on (default 127.0.0.1)\n"
    "  --port N                port (default 8000; 0 picks a free one)\n"
    "  --log-level LEVEL       debug, info (access log), warn or error (default info)\n"
    "  --access-log FORMAT     text, json (one object a line) or off (default text)\n"
    "  --access-log-file PATH  append the access log to PATH, not stderr (SIGUSR1 reopens it)\n"
    "  --proxy-headers         req.client, req.scheme from X-Forwarded-For/-Proto, Forwarded\n"
    "                          when the peer is in --forwarded-allow-ips\n"
    "  --forwarded-allow-ips L trusted proxies: a comma list of addresses, * for any\n"
    "                          (default 127.0.0.1)\n"
    "  --tls-cert FILE         serve HTTPS: the PEM certificate chain (server's first); needs\n"
    "                          --tls-key; SIGHUP reloads both (default: plain HTTP)\n"
    "  --tls-key FILE          the PEM private key of --tls-cert\n"
    "  --metrics-port N        serve Prometheus metrics on GET /metrics at this port (default\n"
    "                          0: off)\n"
    "  --metrics-host ADDR     address the metrics port listens on (default: --host's)\n"
    "  --max-body BYTES        largest request body (default 1048576) -> 413\n"
    "  --ws-max-message BYTES  largest WebSocket message (default 1048576) -> close 1009\n"
    "  --graceful-timeout S    seconds a stop (SIGINT/SIGTERM) may take: requests, background\n"
    "                          tasks, on_shutdown hooks (default 10)\n"
    "  --header-timeout S      seconds a client has to send a header block (default 10)\n"
    "  --keepalive-timeout S   seconds an idle keep-alive connection stays open (default 5)\n"
    "  --workers N             N worker processes on the port, under a supervisor that\n"
    "                          restarts them and reloads them on SIGHUP (0: one per core;\n"
    "                          default: none, one process)\n"
    "  --pool-size N           threads for { pool = true } routes (default 40, per worker)\n"
    "  --executor-size N       threads for moonlet.run_in_pool, apart from the pool's\n"
    "                          (default 128, per worker; started as calls need them)\n"
    "  --pool-queue N          jobs that may wait for busy threads, then 503 (default 1024,\n"
    "                          for the pool and for the executor each)\n"
    "  --shared-mem BYTES      the shared-memory region of all moonlet.shared dictionaries\n"
    "                          (default 67108864)\n"
    "  --block-warn MS         warn when a coroutine holds the loop this long (default 100)\n"
    "  --reload                reload the app when a .lua file in APPDIR changes (development;\n"
    "                          implies --debug)\n"
    "  --debug                 development mode: a 500 shows its Lua error and traceback\n"
    "                          (HTML for a browser, else JSON); never use it in production\n"
    "  --worker NAME           also run the tasks of the app's job queue NAME in this process\n"
    "                          (repeatable; see worker)\n"
    "\n"
    "worker options (and serve's --log-level, --pool-size, --executor-size, --pool-queue,\n"
    "--shared-mem, --block-warn, --metrics-port, --metrics-host, --debug; no HTTP port):\n"
    "  --queue NAME            a moonlet.jobs queue the app declares (repeatable; at least one)\n"
    "  --concurrency N         jobs run at once per queue (default 50)\n"
    "  --graceful-timeout S    on SIGTERM/SIGINT: stop taking jobs, let the running ones\n"
    "                          finish for up to S seconds (default 10), exit 0; the rest\n"
    "                          stay pending and are reclaimed by another worker\n";

static char who[40] = "moonlet";   /* "moonlet [worker 1]" in a worker process */

static int fail(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "%s: ", who);
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  return 2;
}

static int parse_number(const char *s, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || v < min || v > max) return -1;
  *out = v;
  return 0;
}

/* --metrics-port with --workers: the supervisor serves the workers' region; a worker gone
 * leaves no gauge behind (its counters stay), and the listener closes with the supervisor. */
static void metrics_worker_gone(void *arg, int slot, int metrics_slot, int pid) {
  (void)arg, (void)slot, (void)pid;
  ml_metrics_slot_gone(metrics_slot);
}

static void metrics_stop(void *arg) {
  (void)arg;
  ml_metrics_serve_close();
}

static int supervise_metrics(ml_supervisor_t *sup, const ml_config_t *cfg, int workers,
                             char *err, size_t errlen) {
  /* two slots a worker: a reload's new generation records beside the old one */
  int fd = ml_metrics_region_create(2 * workers, err, errlen);
  if (fd < 0 || ml_supervisor_pass_fd(sup, fd, "MOONLET_METRICS_FD")) return -1;
  const char *host = cfg->metrics_host ? cfg->metrics_host : cfg->host;
  if (ml_metrics_serve(ml_supervisor_loop(sup), host, cfg->metrics_port, err, errlen)) return -1;
  ml_supervisor_on_worker_exit(sup, metrics_worker_gone, NULL);
  ml_supervisor_on_stop(sup, metrics_stop, NULL);
  return 0;
}

/* --workers N: a supervisor runs the workers, each `moonlet serve` with the same
 * arguments but --workers (see core/prod/supervisor.h). Returns the exit status. */
static int supervise(const ml_config_t *cfg, int workers, int argc, char **argv) {
  char **args = malloc(((size_t)argc + 1) * sizeof *args);
  if (!args) return fail("out of memory%s%s", "", "");
  int n = 0;
  args[n++] = "serve";
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--workers") == 0) i++;
    else args[n++] = argv[i];
  }
  ml_supervisor_config_t sc = {
      .host = cfg->host, .port = cfg->port, .workers = workers, .args = args, .nargs = n,
      .https = cfg->tls_cert != NULL};
  ml_log_configure(cfg->log_level, NULL, NULL);   /* the supervisor's own lines */
  ml_supervisor_t *sup = ml_supervisor_new(&sc);
  free(args);
  char err[512];
  /* moonlet.shared: one region for every worker, mapped before any is spawned */
  int shared_fd = -1;
  if (ml_supervisor_bind(sup, err, sizeof err) ||
      (shared_fd = ml_shared_region_create(cfg->shared_mem, err, sizeof err)) < 0 ||
      ml_supervisor_pass_fd(sup, shared_fd, "MOONLET_SHARED_FD") ||
      (cfg->metrics_port && supervise_metrics(sup, cfg, workers, err, sizeof err))) {
    ml_supervisor_free(sup);
    return fail("%s%s", err, "");
  }
  int status = ml_supervisor_run(sup);
  ml_supervisor_free(sup);
  return status;
}

/* A worker of --workers: the supervisor passes the moonlet.shared region's descriptor in
 * MOONLET_SHARED_FD; it is mapped before the app loads (whose top level may use a
 * dictionary), and neither the descriptor nor the variable reaches the app's own child processes. */
static int attach_shared_region(void) {
  const char *fd = getenv("MOONLET_SHARED_FD");
  if (!fd) return 0;
  char err[256];
  int n = atoi(fd);
  int rc = ml_shared_region_attach(n, err, sizeof err);
  if (rc == 0) close(n);   /* the mapping stays; the app's children get no descriptor */
  unsetenv("MOONLET_SHARED_FD");
  return rc ? fail("%s%s", err, "") : 0;
}

/* Adds name to the comma list of job queues in buf (--queue, --worker). */
static int add_queue(char *buf, size_t len, const char *name) {
  size_t used = strlen(buf);
  if (!*name || strchr(name, ',') || used + strlen(name) + 2 > len) return -1;
  snprintf(buf + used, len - used, "%s%s", used ? "," : "", name);
  return 0;
}

/* `moonlet serve` (worker_cmd 0) and `moonlet worker` (1): the same host, the worker's
 * without an HTTP port. */
static int cmd_serve(int argc, char **argv, int worker_cmd) {
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  if (worker_cmd) cfg.no_listener = 1;
  static char queues[1024];
  const char *appdir = NULL;
  int workers = -1;   /* no --workers: one process */
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (appdir) return fail("unexpected argument '%s'%s (one APPDIR only)", a, "");
      appdir = a;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (strcmp(a, "--proxy-headers") == 0) {
      cfg.proxy_headers = 1;
      continue;
    }
    if (strcmp(a, "--reload") == 0 || strcmp(a, "--debug") == 0) {
      if (a[2] == 'r') cfg.reload = 1;
      else cfg.debug = 1;
      continue;
    }
    if (i + 1 >= argc) return fail("option %s needs a value%s", a, "");
    const char *v = argv[++i];
    double d;
    if (strcmp(a, "--host") == 0) {
      cfg.host = v;
    } else if (strcmp(a, "--port") == 0) {
      if (parse_number(v, 0, 65535, &d) || d != (int)d)
        return fail("--port: expected a port number 0-65535, got '%s'%s", v, "");
      cfg.port = (int)d;
    } else if (strcmp(a, "--log-level") == 0) {
      cfg.log_level = ml_log_parse_level(v);
      if (cfg.log_level < 0) return fail("--log-level: expected debug, info, warn or error, got '%s'%s", v, "");
    } else if (strcmp(a, "--access-log") == 0) {
      cfg.access_log = ml_access_parse(v);
      if (cfg.access_log < 0) return fail("--access-log: expected text, json or off, got '%s'%s", v, "");
    } else if (strcmp(a, "--metrics-port") == 0) {
      if (parse_number(v, 0, 65535, &d) || d != (int)d)
        return fail("--metrics-port: expected a port number 0-65535, got '%s'%s", v, "");
      cfg.metrics_port = (int)d;
    } else if (strcmp(a, "--metrics-host") == 0) {
      cfg.metrics_host = v;
    } else if (strcmp(a, "--forwarded-allow-ips") == 0) {
      cfg.forwarded_allow_ips = v;
    } else if (strcmp(a, "--tls-cert") == 0) {
      cfg.tls_cert = v;
    } else if (strcmp(a, "--tls-key") == 0) {
      cfg.tls_key = v;
    } else if (strcmp(a, "--access-log-file") == 0) {
      cfg.access_log_file = v;
    } else if (strcmp(a, "--max-body") == 0) {
      if (parse_number(v, 0, 1e12, &d) || d != (double)(size_t)d)
        return fail("--max-body: expected a number of bytes, got '%s'%s", v, "");
      cfg.max_body = (size_t)d;
    } else if (strcmp(a, "--ws-max-message") == 0) {
      if (parse_number(v, 1, 1e12, &d) || d != (double)(size_t)d)
        return fail("--ws-max-message: expected a number of bytes, got '%s'%s", v, "");
      cfg.ws_max_message = (size_t)d;
    } else if (strcmp(a, "--graceful-timeout") == 0 || strcmp(a, "--header-timeout") == 0 ||
               strcmp(a, "--keepalive-timeout") == 0) {
      if (parse_number(v, 0, 86400, &d)) return fail("%s: expected seconds, got '%s'", a, v);
      if (a[2] == 'g') cfg.graceful_timeout = d;
      else if (a[2] == 'h') cfg.header_timeout = d;
      else cfg.keepalive_timeout = d;
    } else if (strcmp(a, "--pool-size") == 0 || strcmp(a, "--pool-queue") == 0 ||
               strcmp(a, "--executor-size") == 0) {
      int queue = strcmp(a, "--pool-queue") == 0;
      if (parse_number(v, queue ? 0 : 1, 100000, &d) || d != (int)d)
        return fail("%s: expected a whole number, got '%s'", a, v);
      if (queue) cfg.pool_queue = (int)d;
      else if (a[2] == 'e') cfg.executor_size = (int)d;
      else cfg.pool_size = (int)d;
    } else if (strcmp(a, "--shared-mem") == 0) {
      if (parse_number(v, 0, 1e12, &d) || d != (double)(size_t)d)
        return fail("--shared-mem: expected a number of bytes, got '%s'%s", v, "");
      cfg.shared_mem = (size_t)d;
    } else if (strcmp(a, "--workers") == 0) {
      if (parse_number(v, 0, 1024, &d) || d != (int)d)
        return fail("--workers: expected a number of processes 0-1024, got '%s'%s", v, "");
      workers = d ? (int)d : (int)uv_available_parallelism();
    } else if ((worker_cmd && strcmp(a, "--queue") == 0) ||
               (!worker_cmd && strcmp(a, "--worker") == 0)) {
      if (add_queue(queues, sizeof queues, v))
        return fail("%s: expected a queue name (no comma), got '%s'", a, v);
    } else if (worker_cmd && strcmp(a, "--concurrency") == 0) {
      if (parse_number(v, 1, 100000, &d) || d != (int)d)
        return fail("--concurrency: expected a whole number 1-100000, got '%s'%s", v, "");
      cfg.jobs_concurrency = (int)d;
    } else if (strcmp(a, "--block-warn") == 0) {
      if (parse_number(v, 0, 1e7, &d)) return fail("--block-warn: expected milliseconds, got '%s'%s", v, "");
      cfg.block_warn_ms = d;
    } else {
      return fail("unknown option '%s'%s (see moonlet --help)", a, "");
    }
  }
  const char *cmd = worker_cmd ? "worker" : "serve";
  if (!appdir) return fail("%s: missing APPDIR%s (see moonlet --help)", cmd, "");
  if (worker_cmd && !queues[0])
    return fail("worker: no --queue NAME%s%s (see moonlet --help)", "", "");
  if (worker_cmd && (workers >= 0 || cfg.reload || cfg.tls_cert))
    return fail("worker: --workers, --reload and --tls-cert are for serve%s%s", "", "");
  if (queues[0]) cfg.jobs_worker = queues;
  if (workers >= 0 && cfg.reload)
    return fail("--workers and --reload do not go together%s%s: --reload is for development "
                "(one process); reload workers with SIGHUP", "", "");
  /* every connection is a file descriptor: take all the kernel allows this process */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if ((cfg.tls_cert != NULL) != (cfg.tls_key != NULL))
    return fail("%s%s", cfg.tls_cert ? "--tls-cert needs --tls-key" : "--tls-key needs --tls-cert", "");
  if (cfg.tls_cert) {   /* said now, once, rather than by every worker */
    char err[512];
    SSL_CTX *ctx = ml_tls_server_ctx_new(cfg.tls_cert, cfg.tls_key, err, sizeof err);
    if (!ctx) return fail("%s%s", err, "");
    SSL_CTX_free(ctx);
  }
  if (workers >= 0) return supervise(&cfg, workers, argc, argv);
  char err[1024];
  /* a worker of the supervisor (--workers) with --metrics-port: it records into its slot
   * of the supervisor's metrics region, from before its app loads */
  const char *mfd = getenv("MOONLET_METRICS_FD"), *mslot = getenv("MOONLET_METRICS_SLOT");
  if (mfd && mslot) {
    int fd = atoi(mfd);
    if (ml_metrics_region_attach(fd, atoi(mslot), err, sizeof err))
      return fail("%s%s", err, "");
    close(fd);   /* the mapping stays; the app's children get no descriptor */
    unsetenv("MOONLET_METRICS_FD");
  }
  ml_worker_t worker;   /* run by a supervisor? */
  int is_worker = ml_worker_init(&worker, err, sizeof err);
  if (is_worker < 0) return fail("%s%s", err, "");
  unsetenv("MOONLET_METRICS_SLOT");   /* read: ml_worker_init took it already, or above */
  if (is_worker == 0) {
    cfg.listen_fd = worker.listen_fd;
    snprintf(who, sizeof who, "moonlet [worker %d]", worker.slot);
  }
  ml_host_t *h = ml_host_new(&cfg);
  if (!h) return fail("out of memory%s%s", "", "");
  if (attach_shared_region()) {
    ml_host_free(h);
    return 2;
  }
  if (ml_host_load(h, appdir, err, sizeof err) || ml_host_listen(h, err, sizeof err)) {
    ml_host_free(h);
    return fail("%s%s", err, "");
  }
  ml_host_handle_signals(h);
  if (is_worker == 0) {   /* the supervisor says "listening on" once all are ready */
    ml_worker_signals();
    ml_worker_ready(&worker);
  } else if (!worker_cmd) {
    int v6 = strchr(cfg.host, ':') != NULL;
    printf("listening on %s://%s%s%s:%d\n", cfg.tls_cert ? "https" : "http", v6 ? "[" : "",
           cfg.host, v6 ? "]" : "", ml_host_port(h));
    fflush(stdout);
  }
  int dropped = ml_host_run(h);
  ml_host_free(h);
  return dropped ? 1 : 0;   /* a stop that dropped requests says so to the supervisor too */
}

/* Debian's directory of Lua 5.1 C modules (busted needs lfs, term, system); the Makefile
 * passes the one for the compiler's target. */
#ifndef ML_LUA_CDIR
#define ML_LUA_CDIR ""
#endif

/* Runs require(module).main(argv, ML_LUA_CDIR) in a Lua state of its own and returns its
 * exit status: the commands written in Lua (test: lua/moonlet/test.lua, which runs busted;
 * new and routes: lua/moonlet/cli/). */
static int cmd_lua(const char *module, int argc, char **argv) {
  lua_State *L = ml_lua_new(".", NULL);
  if (!L) return fail("out of memory%s%s", "", "");
  /* a loop of its own: moonlet primitives (sleep, http, db) block the command (the spec
   * runner, an app's top level) */
  uv_loop_t loop;
  ml_sched_t sched;
  uv_loop_init(&loop);
  ml_sched_init(&sched, L, &loop);
  lua_pushcfunction(L, ml_lua_traceback);
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  if (lua_pcall(L, 1, 1, 1)) {
    fprintf(stderr, "moonlet: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 2;
  }
  lua_getfield(L, -1, "main");
  lua_createtable(L, argc, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushstring(L, ML_LUA_CDIR);
  int rc = 2;
  if (lua_pcall(L, 2, 1, 1)) fprintf(stderr, "moonlet: %s\n", lua_tostring(L, -1));
  else rc = (int)lua_tointeger(L, -1);
  fflush(stdout);
  ml_sched_close(&sched);
  uv_run(&loop, UV_RUN_DEFAULT);
  lua_close(L);
  /* the finalizers lua_close ran close handles of theirs (a test client's connections a
   * spec left open): their close callbacks free them */
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2, 0);
  if (strcmp(cmd, "worker") == 0) return cmd_serve(argc - 2, argv + 2, 1);
  if (strcmp(cmd, "test") == 0) return cmd_lua("moonlet.test", argc - 2, argv + 2);
  if (strcmp(cmd, "new") == 0) return cmd_lua("moonlet.cli.new", argc - 2, argv + 2);
  if (strcmp(cmd, "routes") == 0) return cmd_lua("moonlet.cli.routes", argc - 2, argv + 2);
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    printf("moonlet %s\n", MOONLET_VERSION);
    return 0;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  return fail("unknown command '%s'%s (see moonlet --help)", cmd, "");
}
