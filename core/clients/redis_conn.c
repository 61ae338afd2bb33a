/* moonlet.redis's connections and their pools (see redis.h for the model and ownership).
 *
 * A connection starts with redisAsyncConnect (hiredis connects without blocking; a host
 * name is resolved by getaddrinfo, which blocks: give an address or a name /etc/hosts
 * knows), AUTH and SELECT queued at once (hiredis sends them when the socket is up). Its
 * poll handle is ref'd only while commands wait on it: idle connections hold no loop
 * open. The connect deadline is a timer of its own; at the deadline the connection is
 * killed and its commands fail with "redis: connect timeout". */
#include "redis.h"
#include "err.h"
#include "mem.h"
#include <hiredis/adapters/libuv.h>
#include <ctype.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char pools_key = 'r';   /* registry[&pools_key] = the pools' userdata */
static const char pools_mt[] = "moonlet.redis.pools";

static uv_handle_t *conn_poll(ml_redis_conn_t *c) {
  return (uv_handle_t *)&((redisLibuvEvents *)c->ac->ev.data)->handle;
}

/* --- the libuv adapter ----------------------------------------------------------------- */

/* hiredis 0.14's adapter (redisLibuvAttach) drops a poll callback whose status is an
 * error, and libuv reports a refused connect that way (POLLERR: UV_EBADF, the handle
 * stopped): the connection would hang until its deadline. Its own hooks are replaced by
 * these, which hand such an event to hiredis as what was being waited for (as later
 * hiredis adapters do); hiredis then finds the socket's error itself. Its struct and its
 * cleanup (uv_close, then free) stay the adapter's. */
static void poll_cb(uv_poll_t *h, int status, int events) {
  redisLibuvEvents *p = h->data;
  int ev = status ? p->events : events;
  if (p->context && (ev & UV_READABLE)) redisAsyncHandleRead(p->context);
  if (p->context && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->context);
}

static void poll_set(redisLibuvEvents *p, int events) {
  p->events = events;
  if (events) uv_poll_start(&p->handle, events, poll_cb);
  else uv_poll_stop(&p->handle);
}

static void add_read(void *data) { poll_set(data, ((redisLibuvEvents *)data)->events | UV_READABLE); }
static void del_read(void *data) { poll_set(data, ((redisLibuvEvents *)data)->events & ~UV_READABLE); }
static void add_write(void *data) { poll_set(data, ((redisLibuvEvents *)data)->events | UV_WRITABLE); }
static void del_write(void *data) { poll_set(data, ((redisLibuvEvents *)data)->events & ~UV_WRITABLE); }

static int attach(redisAsyncContext *ac, uv_loop_t *loop) {
  if (redisLibuvAttach(ac, loop) != REDIS_OK) return -1;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  return 0;
}

/* --- connections ----------------------------------------------------------------------- */

/* c leaves every list of its pool: nobody picks it any more. */
static void conn_unlink(ml_redis_conn_t *c) {
  ml_redis_pool_t *p = c->pool;
  if (!p) return;
  if (p->shared == c) p->shared = NULL;
  if (ml_list_linked(&c->link)) {
    ml_list_remove(&c->link);
    p->nidle--;
  }
  ml_list_remove(&c->all);
  c->pool = NULL;
}

static void timer_closed_cb(uv_handle_t *h) { free(h); }

static void timer_stop(ml_redis_conn_t *c) {
  if (!c->timer) return;
  uv_close((uv_handle_t *)c->timer, timer_closed_cb);
  c->timer = NULL;
}

/* hiredis is done with c's context: c goes, then its subscription learns it (why: what
 * went wrong, if its subscription may not know yet). */
static void conn_free(ml_redis_conn_t *c, const char *why) {
  ml_redis_sub_t *sub = c->sub;
  conn_unlink(c);
  timer_stop(c);
  free(c);
  if (sub) ml_redis_sub_conn_gone(sub, why);
}

static void connect_cb(const redisAsyncContext *ac, int status) {
  ml_redis_conn_t *c = ac->data;
  if (!c) return;
  timer_stop(c);
  if (status != REDIS_OK) {
    /* hiredis fails its pending commands next, with ac->errstr, and frees ac */
    char err[ML_REDIS_ERRLEN];
    ml_redis_conn_error(ac, err);
    ((redisAsyncContext *)ac)->data = NULL;
    conn_free(c, err);
    return;
  }
  if (c->sub) ml_redis_sub_connected(c->sub);
}

static void disconnect_cb(const redisAsyncContext *ac, int status) {
  (void)status;
  ml_redis_conn_t *c = ac->data;
  if (!c) return;
  ((redisAsyncContext *)ac)->data = NULL;
  conn_free(c, "redis: closed");
}

static void connect_timeout_cb(uv_timer_t *h) {
  ml_redis_conn_kill(h->data, "redis: connect timeout");
}

/* AUTH and SELECT answer here: an error ends the connection with the server's message,
 * which its pending commands then fail with. */
static void setup_cb(redisAsyncContext *ac, void *r, void *privdata) {
  (void)privdata;
  ml_redis_conn_t *c = ac->data;
  const redisReply *reply = r;
  if (!c) return;
  ml_redis_conn_pending(c, -1);
  if (reply && reply->type == REDIS_REPLY_ERROR) ml_redis_conn_kill(c, reply->str);
}

static int setup(ml_redis_conn_t *c) {
  ml_redis_pool_t *p = c->pool;
  if (p->password) {
    const char *argv[3] = {"AUTH", p->user ? p->user : p->password, p->password};
    if (redisAsyncCommandArgv(c->ac, setup_cb, NULL, p->user ? 3 : 2, argv, NULL) != REDIS_OK)
      return -1;
    ml_redis_conn_pending(c, 1);
  }
  if (p->db) {
    if (redisAsyncCommand(c->ac, setup_cb, NULL, "SELECT %d", p->db) != REDIS_OK) return -1;
    ml_redis_conn_pending(c, 1);
  }
  return 0;
}

ml_redis_conn_t *ml_redis_conn_new(ml_redis_pool_t *p, int kind, uint64_t connect_ms,
                                   char *err) {
  if (p->owner->closed) {
    ml_err(err, ML_REDIS_ERRLEN, "redis: closed");
    return NULL;
  }
  redisAsyncContext *ac = redisAsyncConnect(p->host, p->port);
  if (!ac) ml_oom_check(NULL);
  if (ac->err || attach(ac, p->owner->loop)) {
    ml_err(err, ML_REDIS_ERRLEN, "redis: %s", ac->err ? ac->errstr : "cannot watch the socket");
    if (err[7]) err[7] = (char)tolower((unsigned char)err[7]);
    redisAsyncFree(ac);
    return NULL;
  }
  ml_redis_conn_t *c = ml_xcalloc(1, sizeof *c);
  c->ac = ac;
  c->pool = p;
  c->kind = kind;
  ac->data = c;
  ml_list_init(&c->link);
  ml_list_push(&p->all, &c->all);
  redisAsyncSetConnectCallback(ac, connect_cb);
  redisAsyncSetDisconnectCallback(ac, disconnect_cb);
  uv_unref(conn_poll(c));
  if (connect_ms) {
    c->timer = ml_xmalloc(sizeof *c->timer);
    uv_timer_init(p->owner->loop, c->timer);
    c->timer->data = c;
    uv_timer_start(c->timer, connect_timeout_cb, connect_ms, 0);
    uv_unref((uv_handle_t *)c->timer);   /* the commands waiting keep the loop alive */
  }
  if (setup(c)) {
    ml_redis_conn_kill(c, NULL);
    ml_err(err, ML_REDIS_ERRLEN, "redis: closed");
    return NULL;
  }
  return c;
}

ml_redis_conn_t *ml_redis_conn_shared(ml_redis_pool_t *p, uint64_t connect_ms, char *err) {
  if (!p->shared) p->shared = ml_redis_conn_new(p, ML_REDIS_SHARED, connect_ms, err);
  return p->shared;
}

ml_redis_conn_t *ml_redis_conn_own(ml_redis_pool_t *p, uint64_t connect_ms, char *err) {
  ml_redis_conn_t *c = ml_list_first(&p->idle, ml_redis_conn_t, link);
  if (!c) return ml_redis_conn_new(p, ML_REDIS_OWN, connect_ms, err);
  ml_list_remove(&c->link);
  p->nidle--;
  return c;
}

void ml_redis_conn_checkin(ml_redis_conn_t *c) {
  ml_redis_pool_t *p = c->pool;
  if (c->dead) return;
  if (!p || p->owner->closed || p->nidle >= ML_REDIS_IDLE_MAX || c->pending) {
    ml_redis_conn_kill(c, NULL);
    return;
  }
  ml_list_unshift(&p->idle, &c->link);
  p->nidle++;
}

void ml_redis_conn_kill(ml_redis_conn_t *c, const char *why) {
  if (c->dead) return;
  c->dead = 1;
  if (why) snprintf(c->why, sizeof c->why, "%s", why);
  conn_unlink(c);
  redisAsyncContext *ac = c->ac;
  if (ac->c.flags & REDIS_CONNECTED) {
    redisAsyncFree(ac);   /* c goes in disconnect_cb: now, or after the running callback */
  } else {
    /* hiredis runs no connect or disconnect callback here: the commands' callbacks run
     * (c still there for their message), then c goes */
    char why_copy[ML_REDIS_ERRLEN];   /* conn_free frees c, then tells its subscription */
    snprintf(why_copy, sizeof why_copy, "%s", c->why[0] ? c->why : "redis: closed");
    redisAsyncFree(ac);
    conn_free(c, why_copy);
  }
}

void ml_redis_conn_pending(ml_redis_conn_t *c, int delta) {
  c->pending += delta;
  if (c->dead) return;
  if (c->pending > 0) uv_ref(conn_poll(c));
  else uv_unref(conn_poll(c));
}

int ml_redis_conn_ready(const ml_redis_conn_t *c) {
  return !c->dead && (c->ac->c.flags & REDIS_CONNECTED);
}

void ml_redis_conn_error(const redisAsyncContext *ac, char *err) {
  const ml_redis_conn_t *c = ac->data;
  if (c && c->why[0]) {
    snprintf(err, ML_REDIS_ERRLEN, "%s", c->why);
  } else if (ac->errstr[0]) {
    snprintf(err, ML_REDIS_ERRLEN, "redis: %c%s", tolower((unsigned char)ac->errstr[0]),
             ac->errstr + 1);
  } else {
    snprintf(err, ML_REDIS_ERRLEN, "redis: closed");
  }
}

/* --- pools ----------------------------------------------------------------------------- */

/* The scheduler closes: every connection goes (their tasks were cancelled first). */
static void pools_close(ml_sched_t *s, void *data) {
  (void)s;
  ml_redis_pools_t *ps = data;
  ps->closed = 1;
  ml_list_each(l, &ps->pools) {
    ml_redis_pool_t *p = ml_list_item(l, ml_redis_pool_t, link);
    ml_redis_conn_t *c;
    while ((c = ml_list_first(&p->all, ml_redis_conn_t, all))) ml_redis_conn_kill(c, NULL);
  }
}

/* The state closes: the pools' memory goes (their connections went with the scheduler). */
static int pools_gc(lua_State *L) {
  ml_redis_pools_t *ps = luaL_checkudata(L, 1, pools_mt);
  ml_list_each(l, &ps->pools) {
    ml_redis_pool_t *p = ml_list_item(l, ml_redis_pool_t, link);
    ml_list_remove(&p->link);
    free(p->key);
    free(p->host);
    free(p->user);
    free(p->password);
    free(p);
  }
  return 0;
}

ml_redis_pools_t *ml_redis_pools_of(lua_State *L, ml_sched_t *s) {
  lua_pushlightuserdata(L, (void *)&pools_key);
  lua_rawget(L, LUA_REGISTRYINDEX);
  ml_redis_pools_t *ps = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (ps) return ps;
  lua_pushlightuserdata(L, (void *)&pools_key);
  ps = lua_newuserdata(L, sizeof *ps);
  memset(ps, 0, sizeof *ps);
  ps->loop = s->loop;
  ps->L = s->L;
  ml_list_init(&ps->pools);
  ps->on_close.fn = pools_close;
  ps->on_close.data = ps;
  ml_sched_on_close(s, &ps->on_close);
  if (luaL_newmetatable(L, pools_mt)) {
    lua_pushcfunction(L, pools_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return ps;
}

ml_redis_pool_t *ml_redis_pool_get(ml_redis_pools_t *ps, const char *key, const char *host,
                                   int port, const char *user, const char *password, int db) {
  ml_list_each(l, &ps->pools) {
    ml_redis_pool_t *p = ml_list_item(l, ml_redis_pool_t, link);
    if (strcmp(p->key, key) == 0) return p;
  }
  ml_redis_pool_t *p = ml_xcalloc(1, sizeof *p);
  p->owner = ps;
  p->key = ml_xstrdup(key);
  p->host = ml_xstrdup(host);
  p->user = user ? ml_xstrdup(user) : NULL;
  p->password = password ? ml_xstrdup(password) : NULL;
  p->port = port;
  p->db = db;
  ml_list_init(&p->idle);
  ml_list_init(&p->all);
  ml_list_push(&ps->pools, &p->link);
  return p;
}
