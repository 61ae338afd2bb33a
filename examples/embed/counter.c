/* examples/embed: a counter service. The count lives in C; Lua routes read and change it
 * through the module "counter" this program preloads into every Lua state, and a thread of
 * this program pushes the count to Server-Sent Events clients every second (ml_host_emit ->
 * the app's on_event handler -> a moonlet.cond the /events streams wait on).
 *
 *   make && ./counter app 8080        # then: curl localhost:8080/count
 *
 * Built against the installed library: cc counter.c $(pkg-config --cflags --libs moonlet). */
#include <moonlet.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The service's state. Pool threads run Lua states of their own at the same time as the
 * loop's, so every access takes the lock. */
typedef struct {
  pthread_mutex_t lock;
  long value;
} counter_t;

static long counter_add(counter_t *c, long n) {
  pthread_mutex_lock(&c->lock);
  long v = c->value += n;
  pthread_mutex_unlock(&c->lock);
  return v;
}

/* --- the Lua module: counter.get(), counter.add(n), counter.reset() ------------------- */

static counter_t *self(lua_State *L) {   /* each function's upvalue 1, set by open */
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int l_get(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)counter_add(self(L), 0));
  return 1;
}

static int l_add(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_pushinteger(L, (lua_Integer)counter_add(self(L), (long)n));
  return 1;
}

static int l_reset(lua_State *L) {
  counter_t *c = self(L);
  pthread_mutex_lock(&c->lock);
  long old = c->value;
  c->value = 0;
  pthread_mutex_unlock(&c->lock);
  lua_pushinteger(L, (lua_Integer)old);
  return 1;
}

/* Runs once in each Lua state that requires "counter"; its upvalue 1 is the pointer given
 * to ml_host_set_userdata, passed on to the module's functions as theirs. */
static int open_counter(lua_State *L) {
  static const luaL_Reg fns[] = {{"get", l_get}, {"add", l_add}, {"reset", l_reset},
                                 {NULL, NULL}};
  void *c = lua_touserdata(L, lua_upvalueindex(1));
  lua_newtable(L);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushlightuserdata(L, c);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -2, f->name);
  }
  return 1;
}

/* --- the ticker: a thread of ours that pushes the count to the app ------------------- */

typedef struct {
  ml_host_t *host;
  counter_t *counter;
} ticker_t;

static void *ticker(void *arg) {
  ticker_t *t = arg;
  for (long n = 1;; n++) {
    nanosleep(&(struct timespec){1, 0}, NULL);
    char json[96];
    snprintf(json, sizeof json, "{\"tick\":%ld,\"value\":%ld}", n, counter_add(t->counter, 0));
    if (ml_host_emit(t->host, "tick", json) != 0) return NULL;   /* stopping */
  }
}

int main(int argc, char **argv) {
  static counter_t counter = {PTHREAD_MUTEX_INITIALIZER, 0};
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  cfg.port = argc > 2 ? atoi(argv[2]) : 8080;
  ml_host_t *h = ml_host_new(&cfg);
  ml_host_preload(h, "counter", open_counter);   /* before ml_host_load */
  ml_host_set_userdata(h, &counter);
  char err[512];
  if (ml_host_load(h, argc > 1 ? argv[1] : "app", err, sizeof err) ||
      ml_host_listen(h, err, sizeof err)) {
    fprintf(stderr, "counter: %s\n", err);
    ml_host_free(h);
    return 1;
  }
  printf("listening on http://127.0.0.1:%d\n", ml_host_port(h));
  fflush(stdout);
  ml_host_handle_signals(h);            /* SIGINT/SIGTERM: a graceful stop */
  pthread_t th;
  ticker_t t = {h, &counter};
  pthread_create(&th, NULL, ticker, &t);
  int dropped = ml_host_run(h);         /* serves until a signal */
  pthread_join(th, NULL);               /* its next emit fails: the host is stopping */
  ml_host_free(h);
  printf("stopped at %ld\n", counter.value);
  return dropped ? 1 : 0;
}
