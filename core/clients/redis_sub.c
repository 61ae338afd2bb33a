/* Subscriptions of moonlet.redis (see redis.h):
 *   redis_subscribe(client, pattern, name, ...) -> sub | nil, err
 *       (waits until Redis confirmed every channel or pattern: a message published after
 *        it returns is delivered)
 *   sub:next([timeout_s]) -> { channel =, data = [, pattern =] } | nil, "timeout" | nil, err
 *   sub:close()
 * A subscription has a connection of its own (ML_REDIS_SUB), which sends SUBSCRIBE or
 * PSUBSCRIBE once it is up. Messages that come while nobody waits are queued, at most
 * SUB_QUEUE_MAX (then the oldest goes). One task waits at a time; a task waiting costs no
 * thread in a coroutine (a pool thread blocks).
 *
 * Ownership. The subscription (sub_t) is shared by its Lua userdata and its connection
 * (refs): hiredis calls back with it as privdata until the connection is gone, which may
 * be after the userdata was collected. Closing (sub:close, __gc) kills the connection:
 * Redis forgets its subscriptions with it. */
#include "redis.h"
#include "core.h"
#include "mem.h"
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define SUB_MT "moonlet.redis.sub"
#define SUB_QUEUE_MAX 10000

typedef struct msg_s {
  struct msg_s *next;
  char *pattern, *channel, *data;   /* pattern NULL for SUBSCRIBE */
  size_t plen, clen, dlen;
} msg_t;

struct ml_redis_sub_s {
  ml_redis_conn_t *c;        /* NULL once gone */
  int refs;                  /* the userdata, the connection */
  int pattern;               /* PSUBSCRIBE */
  int nnames;
  char **names;
  size_t *lens;
  int confirmed;             /* subscribe replies so far */
  ml_task_t *task;           /* the task waiting: for the confirmations, or in next */
  ml_task_t *owner;          /* the task that subscribed, while owner_gen is its gen */
  unsigned owner_gen;
  int ud_ref;                /* while subscribing: the userdata, subscribe's result */
  int closed;                /* sub:close() */
  msg_t *head, *tail;
  int queued;
  char err[ML_REDIS_ERRLEN]; /* set once the connection failed */
  lua_State *L;              /* the state's main thread */
};

static void sub_unref(ml_redis_sub_t *s) {
  if (--s->refs > 0) return;
  msg_t *m = s->head;
  while (m) {
    msg_t *next = m->next;
    free(m);
    m = next;
  }
  for (int i = 0; i < s->nnames; i++) free(s->names[i]);
  free(s->names);
  free(s->lens);
  free(s);
}

static int push_error(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

/* One allocation holds the message and its strings. */
static void enqueue(ml_redis_sub_t *s, const redisReply *pat, const redisReply *ch,
                    const redisReply *data) {
  size_t plen = pat ? pat->len : 0;
  msg_t *m = ml_xmalloc(sizeof *m + plen + ch->len + data->len + 3);
  char *p = (char *)(m + 1);
  m->next = NULL;
  m->pattern = pat ? p : NULL;
  m->plen = plen;
  if (pat) memcpy(p, pat->str, plen);
  p[plen] = 0;
  p += plen + 1;
  m->channel = p;
  m->clen = ch->len;
  memcpy(p, ch->str, ch->len);
  p[ch->len] = 0;
  p += ch->len + 1;
  m->data = p;
  m->dlen = data->len;
  memcpy(p, data->str, data->len);
  p[data->len] = 0;
  if (s->tail) s->tail->next = m;
  else s->head = m;
  s->tail = m;
  if (++s->queued > SUB_QUEUE_MAX) {   /* nobody reads: the oldest goes */
    msg_t *old = s->head;
    s->head = old->next;
    s->queued--;
    free(old);
  }
}

/* Pushes the first queued message as { channel, data [, pattern] } and frees it. */
static void push_message(lua_State *L, ml_redis_sub_t *s) {
  msg_t *m = s->head;
  s->head = m->next;
  if (!s->head) s->tail = NULL;
  s->queued--;
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, m->channel, m->clen);
  lua_setfield(L, -2, "channel");
  lua_pushlstring(L, m->data, m->dlen);
  lua_setfield(L, -2, "data");
  if (m->pattern) {
    lua_pushlstring(L, m->pattern, m->plen);
    lua_setfield(L, -2, "pattern");
  }
  free(m);
}

/* The task waiting stops: its timer, and the connection's count of waiters. */
static ml_task_t *waiter_take(ml_redis_sub_t *s) {
  ml_task_t *t = s->task;
  s->task = NULL;
  if (!t) return NULL;
  ml_task_timer_stop(t);
  if (s->c) ml_redis_conn_pending(s->c, -1);
  if (s->ud_ref != LUA_NOREF) {   /* still subscribing: the userdata is nobody's now */
    luaL_unref(s->L, LUA_REGISTRYINDEX, s->ud_ref);
    s->ud_ref = LUA_NOREF;
  }
  return t;
}

/* The connection failed (err) or was closed: the task waiting learns it. */
static void sub_fail(ml_redis_sub_t *s, const char *err) {
  if (s->err[0]) return;
  snprintf(s->err, sizeof s->err, "%s", err);
  ml_task_t *t = waiter_take(s);
  if (!t) return;
  push_error(t->co, s->err);
  ml_task_wake(t, 2);
}

static void sub_cb(redisAsyncContext *ac, void *r, void *privdata) {
  const redisReply *reply = r;
  ml_redis_sub_t *s = privdata;
  if (!reply) {
    char err[ML_REDIS_ERRLEN];
    ml_redis_conn_error(ac, err);
    sub_fail(s, err);
    return;
  }
  if (reply->type == REDIS_REPLY_ERROR) {   /* NOAUTH, say: the subscription never was */
    sub_fail(s, reply->str);
    if (s->c) ml_redis_conn_kill(s->c, reply->str);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3) return;
  const char *kind = reply->element[0]->str;
  if (!kind) return;
  if (strcmp(kind, "subscribe") == 0 || strcmp(kind, "psubscribe") == 0) {
    if (++s->confirmed == s->nnames && s->task && s->ud_ref != LUA_NOREF) {
      ml_task_t *t = s->task;
      lua_rawgeti(t->co, LUA_REGISTRYINDEX, s->ud_ref);   /* the result, pushed first */
      luaL_unref(s->L, LUA_REGISTRYINDEX, s->ud_ref);
      s->ud_ref = LUA_NOREF;
      waiter_take(s);
      ml_task_wake(t, 1);
    }
    return;
  }
  if (strcmp(kind, "message") == 0) enqueue(s, NULL, reply->element[1], reply->element[2]);
  else if (strcmp(kind, "pmessage") == 0 && reply->elements >= 4)
    enqueue(s, reply->element[1], reply->element[2], reply->element[3]);
  else return;
  if (s->task && s->ud_ref == LUA_NOREF) {
    ml_task_t *t = waiter_take(s);
    push_message(t->co, s);
    ml_task_wake(t, 1);
  }
}

void ml_redis_sub_connected(ml_redis_sub_t *s) {
  int argc = s->nnames + 1;
  const char **argv = ml_xmalloc(sizeof *argv * (size_t)argc);
  size_t *lens = ml_xmalloc(sizeof *lens * (size_t)argc);
  argv[0] = s->pattern ? "PSUBSCRIBE" : "SUBSCRIBE";
  lens[0] = strlen(argv[0]);
  for (int i = 0; i < s->nnames; i++) {
    argv[i + 1] = s->names[i];
    lens[i + 1] = s->lens[i];
  }
  int r = redisAsyncCommandArgv(s->c->ac, sub_cb, s, argc, argv, lens);
  free(argv);
  free(lens);
  if (r != REDIS_OK) ml_redis_conn_kill(s->c, NULL);
}

void ml_redis_sub_conn_gone(ml_redis_sub_t *s, const char *why) {
  s->c = NULL;
  sub_fail(s, why);
  sub_unref(s);
}

/* --- Lua ------------------------------------------------------------------------------- */

static ml_redis_sub_t *check_sub(lua_State *L) {
  ml_redis_sub_t **ud = luaL_checkudata(L, 1, SUB_MT);
  if (!*ud) luaL_error(L, "the subscription is gone");
  return *ud;
}

/* The task stopped waiting. A subscription not yet confirmed is abandoned; so is one
 * whose own task is cancelled (its route's client left: an SSE or WebSocket closed),
 * now rather than when the collector finds it. */
static void sub_cancel(ml_task_t *t) {
  ml_redis_sub_t *s = t->wait;
  int subscribing = s->ud_ref != LUA_NOREF;
  waiter_take(s);
  if (subscribing || (t == s->owner && t->gen == s->owner_gen)) {
    s->closed = 1;
    if (s->c) ml_redis_conn_kill(s->c, "closed");
  }
}

static void next_timeout_cb(uv_timer_t *h) {
  ml_task_t *t = h->data;
  ml_redis_sub_t *s = t->wait;
  t->cancel = NULL;
  waiter_take(s);
  push_error(t->co, "timeout");
  ml_task_wake(t, 2);
}

/* sub:next([timeout_s]) */
static int l_next(lua_State *L) {
  ml_redis_sub_t *s = check_sub(L);
  if (s->head) {
    push_message(L, s);
    return 1;
  }
  if (s->closed) return push_error(L, "closed");
  if (s->err[0]) return push_error(L, s->err);
  if (!s->c) return push_error(L, "redis: closed");
  if (s->task) return luaL_error(L, "another task waits on this subscription");
  uint64_t ms = lua_isnoneornil(L, 2) ? UINT64_MAX : ml_sched_check_ms(L, 2);
  ml_task_t *t = ml_task_current(L);
  s->task = t;
  ml_redis_conn_pending(s->c, 1);
  if (ms != UINT64_MAX) uv_timer_start(ml_task_timer(t), next_timeout_cb, ms, 0);
  return ml_task_wait(L, t, sub_cancel, s);
}

static int l_close(lua_State *L) {
  ml_redis_sub_t **ud = luaL_checkudata(L, 1, SUB_MT);
  ml_redis_sub_t *s = *ud;
  if (!s || s->closed) return 0;
  s->closed = 1;
  if (s->c) ml_redis_conn_kill(s->c, "closed");
  return 0;
}

static int l_gc(lua_State *L) {
  ml_redis_sub_t **ud = luaL_checkudata(L, 1, SUB_MT);
  ml_redis_sub_t *s = *ud;
  if (!s) return 0;
  l_close(L);
  *ud = NULL;
  sub_unref(s);
  return 0;
}

/* redis_subscribe(client, pattern, name, ...) */
static int l_subscribe(lua_State *L) {
  ml_redis_client_t *cl = luaL_checkudata(L, 1, ML_REDIS_CLIENT_MT);
  int pattern = lua_toboolean(L, 2);
  int n = lua_gettop(L) - 2;
  luaL_argcheck(L, n >= 1, 3, "expected a channel");
  for (int i = 3; i <= n + 2; i++) luaL_checkstring(L, i);
  ml_task_t *t = ml_task_current(L);
  ml_redis_sub_t *s = ml_xcalloc(1, sizeof *s);
  s->refs = 1;
  s->pattern = pattern;
  s->nnames = n;
  s->names = ml_xmalloc(sizeof *s->names * (size_t)n);
  s->lens = ml_xmalloc(sizeof *s->lens * (size_t)n);
  s->ud_ref = LUA_NOREF;
  s->L = t->sched->L;
  for (int i = 0; i < n; i++) {
    const char *name = lua_tolstring(L, i + 3, &s->lens[i]);
    s->names[i] = ml_xmalloc(s->lens[i] + 1);
    memcpy(s->names[i], name, s->lens[i] + 1);
  }
  ml_redis_sub_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = s;
  luaL_getmetatable(L, SUB_MT);
  lua_setmetatable(L, -2);
  char err[ML_REDIS_ERRLEN];
  ml_redis_conn_t *c = ml_redis_conn_new(cl->pool, ML_REDIS_SUB, cl->connect_ms, err);
  if (!c) return push_error(L, err);   /* the userdata's __gc frees s */
  c->sub = s;
  s->c = c;
  s->refs++;
  s->ud_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->task = t;
  s->owner = t;
  s->owner_gen = t->gen;
  ml_redis_conn_pending(c, 1);
  return ml_task_wait(L, t, sub_cancel, s);
}

void ml_redis_sub_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"next", l_next}, {"close", l_close}, {NULL, NULL}};
  ml_core_class(L, SUB_MT, methods, l_gc);
  lua_pushcfunction(L, l_subscribe);
  lua_setfield(L, -2, "redis_subscribe");
}
