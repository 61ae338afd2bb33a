/* A C program that embeds moonlet the way issue 17 asks, for embedding_spec.lua: it
 * preloads a C module ("hostinfo") with a user pointer into every Lua state (and the same
 * functions through the FFI: "hostffi", ml_host_preload_ffi), and calls into
 * the loop from threads of its own (ml_host_post, ml_host_emit).
 * Usage: embed_host APPDIR [--reload] [--log-level N] [--pool-size N] [--executor-size N]
 * Prints "listening on http://127.0.0.1:PORT", then reads commands on stdin, one a line,
 * and answers each with one line:
 *   emit NAME [JSON]      ml_host_emit from a thread of its own -> "emit RC"
 *   emits NAME COUNT      COUNT events {"i":1}.. from one thread -> "emits RC"
 *   post THREADS N        THREADS threads post N callbacks each; waits until they ran ->
 *                         "post SENT ran RAN ordered ORDERED" (ORDERED: 1 if every thread's
 *                         callbacks ran in the order it posted them)
 *   stop                  a thread posts 1000 callbacks, then ml_host_stop; once
 *                         ml_host_run returned: "stop ran RAN post RC emit RC"
 * EOF on stdin stops the host too. */
#include "moonlet.h"
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- the preloaded module -------------------------------------------------------------- */

typedef struct {
  const char *name;
  atomic_long total;         /* hostinfo.add: called from the loop and pool threads at once */
  atomic_int opens;          /* how many states opened the module */
} info_t;

static int l_name(lua_State *L) {   /* through the registry: ml_lua_userdata */
  info_t *u = ml_lua_userdata(L);
  lua_pushstring(L, u->name);
  return 1;
}

static int l_add(lua_State *L) {    /* through its upvalue */
  info_t *u = lua_touserdata(L, lua_upvalueindex(1));
  long n = (long)luaL_checkinteger(L, 1);
  lua_pushinteger(L, (lua_Integer)(atomic_fetch_add(&u->total, n) + n));
  return 1;
}

static int l_opens(lua_State *L) {
  info_t *u = lua_touserdata(L, lua_upvalueindex(1));
  lua_pushinteger(L, atomic_load(&u->opens));
  return 1;
}

static int l_one(lua_State *L) {
  lua_pushinteger(L, 1);
  return 1;
}

static int open_hostinfo(lua_State *L) {
  info_t *u = lua_touserdata(L, lua_upvalueindex(1));
  static const luaL_Reg fns[] = {{"name", l_name}, {"add", l_add}, {"opens", l_opens},
                                 {"one", l_one}, {NULL, NULL}};
  lua_newtable(L);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushlightuserdata(L, u);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  lua_pushinteger(L, atomic_fetch_add(&u->opens, 1) + 1);
  lua_setfield(L, -2, "state_id");
  lua_pushboolean(L, u == ml_lua_userdata(L) && u == ml_lua_userdata(L));
  lua_setfield(L, -2, "upvalue_ok");
  return 1;
}

/* --- the same through the FFI (ml_host_preload_ffi) -------------------------------------- */

struct hostffi {
  int (*one)(void);
  double (*scale)(double);
  const char *(*name)(void);
  long (*add)(long);
};

#define HOSTFFI_CDEF \
  "struct hostffi { int (*one)(void); double (*scale)(double); const char *(*name)(void); " \
  "long (*add)(long); };"

static info_t *ffi_info;   /* the module's C state: the same as hostinfo's */

static int ffi_one(void) { return 1; }
static double ffi_scale(double x) { return x * 2.5; }
static const char *ffi_name(void) { return ffi_info->name; }
static long ffi_add(long n) { return atomic_fetch_add(&ffi_info->total, n) + n; }

static const struct hostffi hostffi = {ffi_one, ffi_scale, ffi_name, ffi_add};

/* --- calls from other threads ---------------------------------------------------------- */

static ml_host_t *host;

/* Counted on the loop only; main reads them once `done` says the last callback ran. */
static long ran, out_of_order;
static long next_seq[64];
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int done;

typedef struct {
  int thread;
  long seq;
} call_t;

static void counted_cb(void *arg) {
  call_t *c = arg;
  if (next_seq[c->thread]++ != c->seq) out_of_order++;
  ran++;
  free(c);
}

static void marker_cb(void *arg) {
  (void)arg;
  pthread_mutex_lock(&done_lock);
  done = 1;
  pthread_cond_signal(&done_cond);
  pthread_mutex_unlock(&done_lock);
}

typedef struct {
  int thread;
  long n;
  long sent;
} poster_t;

static void *poster(void *arg) {
  poster_t *p = arg;
  for (long i = 0; i < p->n; i++) {
    call_t *c = malloc(sizeof *c);
    c->thread = p->thread;
    c->seq = i;
    if (ml_host_post(host, counted_cb, c) != 0) {
      free(c);
      break;
    }
    p->sent++;
  }
  return NULL;
}

/* Posts from nthreads threads; returns how many were accepted. */
static long post_from_threads(int nthreads, long n) {
  pthread_t th[64];
  poster_t ps[64];
  long sent = 0;
  for (int i = 0; i < nthreads; i++) {
    ps[i] = (poster_t){i, n, 0};
    pthread_create(&th[i], NULL, poster, &ps[i]);
  }
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    sent += ps[i].sent;
  }
  return sent;
}

typedef struct {
  const char *name, *json;
  long count;                /* > 0: that many {"i":k} */
  int rc;
} emitter_t;

static void *emitter(void *arg) {
  emitter_t *e = arg;
  if (e->count == 0) {
    e->rc = ml_host_emit(host, e->name, e->json);
    return NULL;
  }
  for (long i = 1; i <= e->count && e->rc == 0; i++) {
    char json[32];
    snprintf(json, sizeof json, "{\"i\":%ld}", i);
    e->rc = ml_host_emit(host, e->name, json);
  }
  return NULL;
}

static int emit_from_thread(const char *name, const char *json, long count) {
  emitter_t e = {name, json, count, 0};
  pthread_t th;
  pthread_create(&th, NULL, emitter, &e);
  pthread_join(th, NULL);
  return e.rc;
}

static void *serve(void *h) {
  ml_host_run(h);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: embed_host APPDIR [--reload] [--log-level N] [--pool-size N] "
                    "[--executor-size N]\n");
    return 2;
  }
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  cfg.port = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "--reload") == 0) cfg.reload = 1;
    else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) cfg.log_level = atoi(argv[++i]);
    else if (strcmp(argv[i], "--pool-size") == 0 && i + 1 < argc) cfg.pool_size = atoi(argv[++i]);
    else if (strcmp(argv[i], "--executor-size") == 0 && i + 1 < argc)
      cfg.executor_size = atoi(argv[++i]);
  }
  static info_t info = {.name = "embed_host"};
  host = ml_host_new(&cfg);
  char err[512];
  if (ml_host_preload(host, "hostinfo", open_hostinfo) || ml_host_set_userdata(host, &info) ||
      ml_host_preload(host, "moonlet.x", open_hostinfo) == 0) {
    fprintf(stderr, "embed_host: ml_host_preload\n");
    return 2;
  }
  ffi_info = &info;
  if (ml_host_preload_ffi(host, "hostffi", HOSTFFI_CDEF, "struct hostffi", &hostffi) ||
      ml_host_preload_ffi(host, "cjson", HOSTFFI_CDEF, "struct hostffi", &hostffi) == 0 ||
      ml_host_preload_ffi(host, "x", HOSTFFI_CDEF, "struct hostffi", NULL) == 0) {
    fprintf(stderr, "embed_host: ml_host_preload_ffi\n");
    return 2;
  }
  if (ml_host_load(host, argv[1], err, sizeof err) || ml_host_listen(host, err, sizeof err)) {
    fprintf(stderr, "embed_host: %s\n", err);
    ml_host_free(host);
    return 2;
  }
  /* after the load: refused, the states are made already */
  if (ml_host_preload(host, "late", open_hostinfo) != -1 ||
      ml_host_preload_ffi(host, "late", HOSTFFI_CDEF, "struct hostffi", &hostffi) != -1 ||
      ml_host_set_userdata(host, NULL) != -1 || ml_host_userdata(host) != &info) {
    fprintf(stderr, "embed_host: a preload after ml_host_load was not refused\n");
    return 2;
  }
  printf("listening on http://127.0.0.1:%d\n", ml_host_port(host));
  fflush(stdout);
  pthread_t th;
  pthread_create(&th, NULL, serve, host);
  char line[4096];
  int stopped = 0;
  while (!stopped && fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = '\0';
    char *cmd = strtok(line, " "), *a = strtok(NULL, " "), *b = strtok(NULL, "");
    if (!cmd) continue;
    if (strcmp(cmd, "emit") == 0 && a) {
      printf("emit %d\n", emit_from_thread(a, b, 0));
    } else if (strcmp(cmd, "emits") == 0 && a && b) {
      printf("emits %d\n", emit_from_thread(a, NULL, atol(b)));
    } else if (strcmp(cmd, "post") == 0 && a && b) {
      int nthreads = atoi(a);
      if (nthreads < 1 || nthreads > 64) nthreads = 1;
      long sent = post_from_threads(nthreads, atol(b));
      done = 0;
      ml_host_post(host, marker_cb, NULL);   /* posted last: it runs last */
      pthread_mutex_lock(&done_lock);
      while (!done) pthread_cond_wait(&done_cond, &done_lock);
      pthread_mutex_unlock(&done_lock);
      printf("post %ld ran %ld ordered %d\n", sent, ran, out_of_order == 0);
      ran = 0;
      memset(next_seq, 0, sizeof next_seq);
    } else if (strcmp(cmd, "stop") == 0) {
      stopped = 1;
    } else {
      printf("unknown command\n");
    }
    fflush(stdout);
  }
  long sent = post_from_threads(1, 1000);
  ml_host_stop(host);
  pthread_join(th, NULL);
  int post_rc = ml_host_post(host, marker_cb, NULL);
  int emit_rc = ml_host_emit(host, "tick", "1");
  printf("stop sent %ld ran %ld post %d emit %d\n", sent, ran, post_rc, emit_rc);
  fflush(stdout);
  ml_host_free(host);
  return 0;
}
