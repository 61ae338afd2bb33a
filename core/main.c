/* The moonlet CLI: a thin layer over the embedding API in moonlet.h. */
#include "moonlet.h"
#include "log.h"
#include "access_log.h"
#include "lstate.h"
#include "metrics.h"
#include "sched.h"
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char usage[] =
    "usage: moonlet serve APPDIR [options]   serve the app in APPDIR (APPDIR/app.lua)\n"
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
    "  --metrics-port N        serve Prometheus metrics on GET /metrics at this port (default\n"
    "                          0: off)\n"
    "  --metrics-host ADDR     address the metrics port listens on (default: --host's)\n"
    "  --max-body BYTES        largest request body (default 1048576) -> 413\n"
    "  --ws-max-message BYTES  largest WebSocket message (default 1048576) -> close 1009\n"
    "  --graceful-timeout S    seconds a stop (SIGINT/SIGTERM) may take: requests, background\n"
    "                          tasks, on_shutdown hooks (default 10)\n"
    "  --header-timeout S      seconds a client has to send a header block (default 10)\n"
    "  --keepalive-timeout S   seconds an idle keep-alive connection stays open (default 5)\n"
    "  --pool-size N           threads for { pool = true } routes and run_in_pool (default 40)\n"
    "  --pool-queue N          jobs that may wait for a busy pool, then 503 (default 1024)\n"
    "  --shared-mem BYTES      memory for all moonlet.shared dictionaries (default 67108864)\n"
    "  --block-warn MS         warn when a coroutine holds the loop this long (default 100)\n"
    "  --reload                reload the app when a .lua file in APPDIR changes (development;\n"
    "                          implies --debug)\n"
    "  --debug                 development mode: a 500 shows its Lua error and traceback\n"
    "                          (HTML for a browser, else JSON); never use it in production\n";

static int fail(const char *fmt, const char *a, const char *b) {
  fputs("moonlet: ", stderr);
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

static int cmd_serve(int argc, char **argv) {
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  const char *appdir = NULL;
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
    } else if (strcmp(a, "--pool-size") == 0 || strcmp(a, "--pool-queue") == 0) {
      if (parse_number(v, a[7] == 's' ? 1 : 0, 100000, &d) || d != (int)d)
        return fail("%s: expected a whole number, got '%s'", a, v);
      if (a[7] == 's') cfg.pool_size = (int)d;
      else cfg.pool_queue = (int)d;
    } else if (strcmp(a, "--shared-mem") == 0) {
      if (parse_number(v, 0, 1e12, &d) || d != (double)(size_t)d)
        return fail("--shared-mem: expected a number of bytes, got '%s'%s", v, "");
      cfg.shared_mem = (size_t)d;
    } else if (strcmp(a, "--block-warn") == 0) {
      if (parse_number(v, 0, 1e7, &d)) return fail("--block-warn: expected milliseconds, got '%s'%s", v, "");
      cfg.block_warn_ms = d;
    } else {
      return fail("unknown option '%s'%s (see moonlet --help)", a, "");
    }
  }
  if (!appdir) return fail("serve: missing APPDIR%s%s (see moonlet --help)", "", "");
  /* every connection is a file descriptor: take all the kernel allows this process */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  char err[1024];
  /* a worker of the supervisor (--workers): it records into its slot of the supervisor's
   * metrics region, from before its app loads */
  const char *mfd = getenv("MOONLET_METRICS_FD"), *mslot = getenv("MOONLET_METRICS_SLOT");
  if (mfd && mslot) {
    if (ml_metrics_region_attach(atoi(mfd), atoi(mslot), err, sizeof err))
      return fail("%s%s", err, "");
    unsetenv("MOONLET_METRICS_FD");
    unsetenv("MOONLET_METRICS_SLOT");
  }
  ml_host_t *h = ml_host_new(&cfg);
  if (!h) return fail("out of memory%s%s", "", "");
  if (ml_host_load(h, appdir, err, sizeof err) || ml_host_listen(h, err, sizeof err)) {
    ml_host_free(h);
    return fail("%s%s", err, "");
  }
  ml_host_handle_signals(h);
  int v6 = strchr(cfg.host, ':') != NULL;
  printf("listening on http://%s%s%s:%d\n", v6 ? "[" : "", cfg.host, v6 ? "]" : "", ml_host_port(h));
  fflush(stdout);
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
  uv_loop_close(&loop);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 2, argv + 2);
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
