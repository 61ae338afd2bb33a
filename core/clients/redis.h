/* moonlet.redis: a Redis client on hiredis's asynchronous API and its libuv adapter.
 *
 * Three files share this header:
 *   redis_conn.c  connections and the pools they live in (one set of pools per Lua state);
 *   redis.c       the Lua API: clients, r:call, r:pipeline, replies turned into Lua values;
 *   redis_sub.c   subscriptions (r:subscribe, r:psubscribe): an iterator of messages.
 *
 * The model. A pool is what one URL (host, port, user, password, db) reaches from one Lua
 * state: on the state's loop, never shared between threads. Ordinary commands and
 * pipelines share one connection per pool, multiplexed: hiredis queues the commands of
 * every task that calls in the same loop turn into one write, and Redis answers in order.
 * Commands that block the server side of a connection (BLPOP and friends, XREAD BLOCK,
 * WAIT) take a connection of their own, from the pool's idle ones or a new one, handed
 * back when the reply came. A subscription owns its connection until it is closed.
 *
 * Ownership. A connection (ml_redis_conn_t) belongs to hiredis's context: it is freed
 * when the context goes (the disconnect callback; the connect callback when connecting
 * failed; right after redisAsyncFree when we freed a context that never connected).
 * Every command given to hiredis gets its callback exactly once, with its reply or with
 * NULL when the connection goes; a request (what a task waits for) is freed by the
 * callback of its last command, never before. A cancelled request stays until then with
 * no task: its replies are thrown away. */
#ifndef ML_REDIS_H
#define ML_REDIS_H
#include "list.h"
#include "sched.h"
#include <hiredis/async.h>
#include <lua.h>
#include <stdint.h>
#include <uv.h>

#define ML_REDIS_ERRLEN 256
#define ML_REDIS_IDLE_MAX 16     /* idle connections of their own a pool keeps */

typedef struct ml_redis_pools_s ml_redis_pools_t;
typedef struct ml_redis_pool_s ml_redis_pool_t;
typedef struct ml_redis_conn_s ml_redis_conn_t;
typedef struct ml_redis_sub_s ml_redis_sub_t;

enum { ML_REDIS_SHARED, ML_REDIS_OWN, ML_REDIS_SUB };   /* what a connection serves */

struct ml_redis_pools_s {   /* one per Lua state: inside a userdata anchored in its registry */
  uv_loop_t *loop;
  lua_State *L;              /* the state's main thread */
  ml_sched_hook_t on_close;  /* the scheduler closes: every connection goes */
  ml_list_t pools;           /* of ml_redis_pool_t */
  int closed;
};

struct ml_redis_pool_s {
  ml_redis_pools_t *owner;
  char *key;                 /* host, port, user, password, db */
  char *host, *user, *password;
  int port, db;
  ml_redis_conn_t *shared;   /* the multiplexed connection, NULL until needed */
  ml_list_t idle;            /* of ml_redis_conn_t (ML_REDIS_OWN), most recent first */
  int nidle;
  ml_list_t all;             /* every connection, to close them with the state */
  ml_list_t link;            /* in owner->pools */
};

struct ml_redis_conn_s {
  /* read-only */
  redisAsyncContext *ac;     /* ac->data is this connection until it goes */
  ml_redis_pool_t *pool;
  int kind;                  /* ML_REDIS_SHARED, ... */
  int dead;                  /* killed: hiredis is freeing it */
  int pending;               /* commands sent, replies not yet received */
  ml_redis_sub_t *sub;       /* ML_REDIS_SUB: what it delivers to (holds a reference) */
  /* private */
  uv_timer_t *timer;         /* the connect deadline; freed by its close callback */
  char why[ML_REDIS_ERRLEN]; /* set when we end it: what its pending commands fail with */
  ml_list_t link;            /* in the pool's idle list while idle (ML_REDIS_OWN) */
  ml_list_t all;             /* in the pool's all list */
};

/* --- redis_conn.c ---------------------------------------------------------------------- */

/* L's set of pools, made on first use on s's loop. */
ml_redis_pools_t *ml_redis_pools_of(lua_State *L, ml_sched_t *s);
/* The pool for key in ps, made on first use. */
ml_redis_pool_t *ml_redis_pool_get(ml_redis_pools_t *ps, const char *key, const char *host,
                                   int port, const char *user, const char *password, int db);
/* A new connection of kind to p's server, connecting (AUTH and SELECT are queued first).
 * NULL with err when it cannot even start. connect_ms: 0 for no deadline. */
ml_redis_conn_t *ml_redis_conn_new(ml_redis_pool_t *p, int kind, uint64_t connect_ms,
                                   char *err);
/* The shared connection of p, made when it has none (NULL with err when it cannot). */
ml_redis_conn_t *ml_redis_conn_shared(ml_redis_pool_t *p, uint64_t connect_ms, char *err);
/* An idle connection of its own from p, or a new one. */
ml_redis_conn_t *ml_redis_conn_own(ml_redis_pool_t *p, uint64_t connect_ms, char *err);
/* c (ML_REDIS_OWN) served its command: back to p's idle list, or closed. */
void ml_redis_conn_checkin(ml_redis_conn_t *c);
/* Ends c: its pending commands get their callbacks with NULL (now, or when the hiredis
 * callback running on c returns) and fail with why (NULL: "redis: closed"). Safe twice. */
void ml_redis_conn_kill(ml_redis_conn_t *c, const char *why);
/* One more (+1) or one less (-1) command waits on c: only then does it keep the loop
 * alive (a pool thread's loop must be able to run dry with idle connections). */
void ml_redis_conn_pending(ml_redis_conn_t *c, int delta);
/* Whether c has connected. */
int ml_redis_conn_ready(const ml_redis_conn_t *c);
/* What a command that got no reply on ac fails with ("redis: ..."), into err. */
void ml_redis_conn_error(const redisAsyncContext *ac, char *err);

/* A client (Lua userdata, ML_REDIS_CLIENT_MT): a pool and the timeouts of the connect
 * that made it. Pools live as long as their state, so a client's pool is always there. */
typedef struct {
  ml_redis_pool_t *pool;
  uint64_t connect_ms;       /* 0: no deadline */
  uint64_t timeout_ms;       /* a command's deadline on the shared connection; 0: none */
} ml_redis_client_t;

#define ML_REDIS_CLIENT_MT "moonlet.redis.client"

/* --- redis.c --------------------------------------------------------------------------- */

/* Pushes reply as a Lua value: status and bulk strings as strings, integers as numbers,
 * nil as moonlet.null (a NULL lightuserdata), arrays as arrays; an error nested in an
 * array as { err = "..." }. A top-level error is the caller's to handle. */
void ml_redis_push_reply(lua_State *L, const redisReply *reply);

/* --- redis_sub.c ----------------------------------------------------------------------- */

/* Installs redis_subscribe into the table on top of the stack, and the subscription's
 * metatable. */
void ml_redis_sub_open(lua_State *L);
/* c, which delivered to sub, is going: sub learns it, with why if nothing told it
 * before (and drops c's reference). */
void ml_redis_sub_conn_gone(ml_redis_sub_t *sub, const char *why);
/* c (ML_REDIS_SUB) connected: it sends the subscription. */
void ml_redis_sub_connected(ml_redis_sub_t *sub);
#endif
