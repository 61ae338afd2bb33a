/* Shared dictionaries (see shared.h). Each entry costs its key and string value bytes plus
 * a fixed overhead, charged against one global budget (an atomic counter). Expired entries
 * are dropped when met and swept before a write is refused. */
#include "shared.h"
#include "core.h"
#include "mem.h"
#include "buf.h"
#include "hash.h"
#include <lauxlib.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define DICT_MT "moonlet.shared.dict"
#define ENTRY_OVERHEAD 64

enum { V_BOOL, V_NUM, V_STR };

typedef struct entry_s {
  struct entry_s *next;
  uint32_t hash;
  size_t klen, vlen;
  int type;
  double num;                /* V_NUM, V_BOOL */
  uint64_t expires;          /* uv_hrtime() deadline, 0 for never */
  char *val;                 /* V_STR: value bytes (after the key in the same block) */
  char key[];
} entry_t;

typedef struct dict_s {
  struct dict_s *next;
  pthread_mutex_t lock;
  entry_t **slots;
  size_t nslots, count;
  char name[];
} dict_t;

static pthread_mutex_t dicts_lock = PTHREAD_MUTEX_INITIALIZER;
static dict_t *dicts;
static size_t capacity = 64u << 20;   /* atomic: one budget per process, the last host's */
static size_t used;          /* atomic */

void ml_shared_configure(size_t bytes) {
  __atomic_store_n(&capacity, bytes, __ATOMIC_RELAXED);
}

static size_t shared_capacity(void) {
  return __atomic_load_n(&capacity, __ATOMIC_RELAXED);
}

static size_t entry_cost(const entry_t *e) {
  return sizeof *e + e->klen + e->vlen + ENTRY_OVERHEAD;
}

static int expired(const entry_t *e, uint64_t now) {
  return e->expires && e->expires <= now;
}

/* Unlinks and frees *pe. Lock held. */
static void drop(dict_t *d, entry_t **pe) {
  entry_t *e = *pe;
  *pe = e->next;
  __atomic_sub_fetch(&used, entry_cost(e), __ATOMIC_RELAXED);
  free(e);
  d->count--;
}

/* The slot pointer of key, or of the NULL at its chain's end. Drops it if expired. */
static entry_t **find(dict_t *d, const char *k, size_t klen, uint32_t h, uint64_t now) {
  entry_t **pe = &d->slots[h & (d->nslots - 1)];
  while (*pe) {
    entry_t *e = *pe;
    if (e->hash == h && e->klen == klen && memcmp(e->key, k, klen) == 0) {
      if (expired(e, now)) {
        drop(d, pe);
        continue;
      }
      return pe;
    }
    pe = &e->next;
  }
  return pe;
}

static void sweep_expired(dict_t *d, uint64_t now) {
  for (size_t i = 0; i < d->nslots; i++) {
    entry_t **pe = &d->slots[i];
    while (*pe) {
      if (expired(*pe, now)) drop(d, pe);
      else pe = &(*pe)->next;
    }
  }
}

static void grow(dict_t *d) {
  size_t n = d->nslots * 2;
  entry_t **slots = ml_xcalloc(n, sizeof *slots);
  for (size_t i = 0; i < d->nslots; i++) {
    entry_t *e = d->slots[i];
    while (e) {
      entry_t *next = e->next;
      e->next = slots[e->hash & (n - 1)];
      slots[e->hash & (n - 1)] = e;
      e = next;
    }
  }
  free(d->slots);
  d->slots = slots;
  d->nslots = n;
}

static dict_t *dict_get(const char *name) {
  pthread_mutex_lock(&dicts_lock);
  dict_t *d = dicts;
  while (d && strcmp(d->name, name) != 0) d = d->next;
  if (!d) {
    d = ml_xcalloc(1, sizeof *d + strlen(name) + 1);
    strcpy(d->name, name);
    pthread_mutex_init(&d->lock, NULL);
    d->nslots = 64;
    d->slots = ml_xcalloc(d->nslots, sizeof *d->slots);
    d->next = dicts;
    dicts = d;
  }
  pthread_mutex_unlock(&dicts_lock);
  return d;
}

static dict_t *check_dict(lua_State *L) {
  dict_t **ud = luaL_checkudata(L, 1, DICT_MT);
  return *ud;
}

static const char *check_key(lua_State *L, size_t *len) {
  const char *k = luaL_checklstring(L, 2, len);
  luaL_argcheck(L, *len > 0 && *len <= 65535, 2, "key must be 1 to 65535 bytes");
  return k;
}

static uint64_t check_ttl(lua_State *L, int idx) {
  double ttl = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, ttl >= 0 && ttl < 1e9, idx, "ttl must be 0 to 1e9 seconds");
  return ttl > 0 ? uv_hrtime() + (uint64_t)(ttl * 1e9) : 0;
}

/* Nothing that can run Lua (allocation may run a GC step, a finalizer — which may use this
 * very dictionary — or raise) happens while a dictionary's lock is held: values are copied
 * out under the lock into the caller's own memory and pushed after unlocking. */
typedef struct {
  int type, found;
  double num;
  size_t len;
  char *str;                 /* small, or malloc'd for longer strings */
  char small[256];
} copied_t;

static void copy_value(const entry_t *e, copied_t *v) {
  v->found = 1;
  v->type = e->type;
  v->num = e->num;
  v->len = 0;
  v->str = v->small;
  if (e->type != V_STR) return;
  if (e->vlen > sizeof v->small) v->str = ml_xmalloc(e->vlen);
  memcpy(v->str, e->val, e->vlen);
  v->len = e->vlen;
}

static void push_copied(lua_State *L, copied_t *v) {
  if (!v->found) lua_pushnil(L);
  else if (v->type == V_NUM) lua_pushnumber(L, v->num);
  else if (v->type == V_BOOL) lua_pushboolean(L, v->num != 0);
  else {
    lua_pushlstring(L, v->str, v->len);
    if (v->str != v->small) free(v->str);
  }
}

static int no_memory(lua_State *L, dict_t *d) {
  pthread_mutex_unlock(&d->lock);
  lua_pushnil(L);
  lua_pushfstring(L, "no memory: shared dictionaries are full (--shared-mem %d bytes)",
                  (int)(shared_capacity() > 0x7fffffff ? 0x7fffffff : shared_capacity()));
  return 2;
}

/* dict:get(key) -> value or nil */
static int l_get(lua_State *L) {
  dict_t *d = check_dict(L);
  size_t klen;
  const char *k = check_key(L, &klen);
  uint32_t h = ml_hash(k, klen);
  copied_t v = {0};
  pthread_mutex_lock(&d->lock);
  entry_t **pe = find(d, k, klen, h, uv_hrtime());
  if (*pe) copy_value(*pe, &v);
  pthread_mutex_unlock(&d->lock);
  push_copied(L, &v);
  return 1;
}

/* Stores (or with value nil, deletes). only_new: add() semantics. */
static int store(lua_State *L, int only_new) {
  dict_t *d = check_dict(L);
  size_t klen, vlen = 0;
  const char *k = check_key(L, &klen);
  int vt = lua_type(L, 3);
  luaL_argcheck(L, vt == LUA_TNIL || vt == LUA_TNONE || vt == LUA_TSTRING ||
                vt == LUA_TNUMBER || vt == LUA_TBOOLEAN, 3,
                "a shared value is a string, a number or a boolean");
  const char *v = vt == LUA_TSTRING ? lua_tolstring(L, 3, &vlen) : NULL;
  uint64_t expires = check_ttl(L, 4);
  uint32_t h = ml_hash(k, klen);
  uint64_t now = uv_hrtime();
  pthread_mutex_lock(&d->lock);
  entry_t **pe = find(d, k, klen, h, now);
  if (only_new && *pe) {
    pthread_mutex_unlock(&d->lock);
    lua_pushnil(L);
    lua_pushliteral(L, "exists");
    return 2;
  }
  if (vt == LUA_TNIL || vt == LUA_TNONE) {
    if (*pe) drop(d, pe);
    pthread_mutex_unlock(&d->lock);
    lua_pushboolean(L, 1);
    return 1;
  }
  size_t cost = sizeof(entry_t) + klen + vlen + ENTRY_OVERHEAD;
  size_t freed = *pe ? entry_cost(*pe) : 0;
  if (__atomic_load_n(&used, __ATOMIC_RELAXED) + cost - freed > shared_capacity()) {
    sweep_expired(d, now);
    pe = find(d, k, klen, h, now);
    freed = *pe ? entry_cost(*pe) : 0;
    if (__atomic_load_n(&used, __ATOMIC_RELAXED) + cost - freed > shared_capacity()) return no_memory(L, d);
  }
  entry_t *e = ml_xmalloc(sizeof *e + klen + vlen);
  memcpy(e->key, k, klen);
  e->klen = klen;
  e->vlen = vlen;
  e->hash = h;
  e->expires = expires;
  e->val = e->key + klen;
  if (vt == LUA_TSTRING) {
    e->type = V_STR;
    memcpy(e->val, v, vlen);
  } else if (vt == LUA_TNUMBER) {
    e->type = V_NUM;
    e->num = lua_tonumber(L, 3);
  } else {
    e->type = V_BOOL;
    e->num = lua_toboolean(L, 3);
  }
  if (*pe) drop(d, pe);
  pe = &d->slots[h & (d->nslots - 1)];
  e->next = *pe;
  *pe = e;
  d->count++;
  __atomic_add_fetch(&used, cost, __ATOMIC_RELAXED);
  if (d->count > d->nslots * 2) grow(d);
  pthread_mutex_unlock(&d->lock);
  lua_pushboolean(L, 1);
  return 1;
}

/* dict:set(key, value[, ttl]) -> true | nil, "no memory ..."; value nil deletes */
static int l_set(lua_State *L) { return store(L, 0); }
/* dict:add(key, value[, ttl]) -> true | nil, "exists" */
static int l_add(lua_State *L) { return store(L, 1); }

/* dict:delete(key) -> true */
static int l_delete(lua_State *L) {
  lua_settop(L, 2);
  lua_pushnil(L);
  return store(L, 0);
}

/* dict:incr(key, by[, init[, ttl]]) -> new value | nil, "not found" | nil, "not a number".
 * Atomic: concurrent increments from any thread are never lost. */
static int l_incr(lua_State *L) {
  dict_t *d = check_dict(L);
  size_t klen;
  const char *k = check_key(L, &klen);
  double by = luaL_checknumber(L, 3);
  int has_init = !lua_isnoneornil(L, 4);
  double init = has_init ? luaL_checknumber(L, 4) : 0;
  uint64_t expires = check_ttl(L, 5);
  uint32_t h = ml_hash(k, klen);
  pthread_mutex_lock(&d->lock);
  entry_t **pe = find(d, k, klen, h, uv_hrtime());
  entry_t *e = *pe;
  if (e) {
    if (e->type != V_NUM) {
      pthread_mutex_unlock(&d->lock);
      lua_pushnil(L);
      lua_pushliteral(L, "not a number");
      return 2;
    }
    e->num += by;
    double v = e->num;
    pthread_mutex_unlock(&d->lock);
    lua_pushnumber(L, v);
    return 1;
  }
  pthread_mutex_unlock(&d->lock);
  if (!has_init) {
    lua_pushnil(L);
    lua_pushliteral(L, "not found");
    return 2;
  }
  /* absent: add init + by, unless another thread added it meanwhile — then retry */
  double ttl = expires ? lua_tonumber(L, 5) : 0;
  for (;;) {
    lua_settop(L, 2);
    lua_pushnumber(L, init + by);
    if (expires) lua_pushnumber(L, ttl);
    int n = store(L, 1);
    if (lua_toboolean(L, -n)) {
      lua_pushnumber(L, init + by);
      return 1;
    }
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "exists") != 0) return n;
    pthread_mutex_lock(&d->lock);
    pe = find(d, k, klen, h, uv_hrtime());
    int type = *pe ? (*pe)->type : -1;
    double v = 0;
    if (type == V_NUM) v = ((*pe)->num += by);
    pthread_mutex_unlock(&d->lock);
    if (type == V_NUM) {
      lua_pushnumber(L, v);
      return 1;
    }
    if (type >= 0) {   /* someone stored a string or a boolean meanwhile */
      lua_pushnil(L);
      lua_pushliteral(L, "not a number");
      return 2;
    }
  }
}

/* dict:keys([max]) -> array of the live keys (max 0 or absent: all) */
static int l_keys(lua_State *L) {
  dict_t *d = check_dict(L);
  int max = (int)luaL_optinteger(L, 2, 0);
  uint64_t now = uv_hrtime();
  int n = 0;
  ml_buf_t keys = {0};   /* (u32 length, bytes) per key, pushed after unlocking */
  pthread_mutex_lock(&d->lock);
  for (size_t i = 0; i < d->nslots && (max <= 0 || n < max); i++)
    for (entry_t *e = d->slots[i]; e && (max <= 0 || n < max); e = e->next)
      if (!expired(e, now)) {
        uint32_t len = (uint32_t)e->klen;
        ml_buf_add(&keys, &len, 4);
        ml_buf_add(&keys, e->key, e->klen);
        n++;
      }
  pthread_mutex_unlock(&d->lock);
  lua_createtable(L, n, 0);
  size_t off = 0;
  for (int i = 1; i <= n; i++) {
    uint32_t len;
    memcpy(&len, keys.data + off, 4);
    lua_pushlstring(L, keys.data + off + 4, len);
    lua_rawseti(L, -2, i);
    off += 4 + len;
  }
  ml_buf_free(&keys);
  return 1;
}

/* dict:flush_all() -> true: removes every entry */
static int l_flush_all(lua_State *L) {
  dict_t *d = check_dict(L);
  pthread_mutex_lock(&d->lock);
  for (size_t i = 0; i < d->nslots; i++)
    while (d->slots[i]) drop(d, &d->slots[i]);
  pthread_mutex_unlock(&d->lock);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_tostring(lua_State *L) {
  dict_t *d = check_dict(L);
  lua_pushfstring(L, "moonlet.shared.dict(\"%s\")", d->name);
  return 1;
}

/* shared_dict(name) -> the dictionary called name, created on first use */
static int l_dict(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && len < 256 && strlen(name) == len, 1, "expected a dictionary name");
  dict_t *d = dict_get(name);
  dict_t **ud = lua_newuserdata(L, sizeof *ud);
  *ud = d;
  luaL_getmetatable(L, DICT_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void ml_shared_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"get", l_get}, {"set", l_set}, {"add", l_add},
                                     {"incr", l_incr}, {"delete", l_delete}, {"keys", l_keys},
                                     {"flush_all", l_flush_all}, {NULL, NULL}};
  if (luaL_newmetatable(L, DICT_MT)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "moonlet.shared.dict");
    lua_setfield(L, -2, "__metatable");
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, l_dict);
  lua_setfield(L, -2, "shared_dict");
}
