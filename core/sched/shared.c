/* moonlet.shared's Lua API (see shared.h): a dictionary handle is a userdata holding the
 * dictionary's index in the shared region; every method is one call into shared_dict.c.
 * Nothing that can run Lua (an allocation may run a GC step, a finalizer -- which may use
 * this very dictionary -- or raise) happens while the region's lock is held: values are
 * copied out under the lock into C memory and pushed after unlocking. */
#include "shared.h"
#include "shared_dict.h"
#include "shared_region.h"
#include "core.h"
#include <lauxlib.h>
#include <string.h>

#define DICT_MT "moonlet.shared.dict"

static int check_dict(lua_State *L) {
  int *ud = luaL_checkudata(L, 1, DICT_MT);
  return *ud;
}

/* The dictionary (argument 1) in *d and the key (argument 2). */
static const char *check_key(lua_State *L, int *d, size_t *len) {
  *d = check_dict(L);
  const char *k = luaL_checklstring(L, 2, len);
  luaL_argcheck(L, *len > 0 && *len <= 65535, 2, "key must be 1 to 65535 bytes");
  return k;
}

static double check_ttl(lua_State *L, int idx) {
  double ttl = luaL_optnumber(L, idx, 0);
  luaL_argcheck(L, ttl >= 0 && ttl < 1e9, idx, "ttl must be 0 to 1e9 seconds");
  return ttl;
}

/* nil and the message of a failed operation. */
static int fail(lua_State *L, int rc) {
  lua_pushnil(L);
  switch (rc) {
  case ML_SD_NOT_FOUND: lua_pushliteral(L, "not found"); break;
  case ML_SD_EXISTS: lua_pushliteral(L, "exists"); break;
  case ML_SD_NOT_NUMBER: lua_pushliteral(L, "not a number"); break;
  case ML_SD_TOO_LARGE:
    lua_pushfstring(L, "too large: no entry this size fits in --shared-mem %f bytes",
                    (double)ml_sdict_capacity());
    break;
  default:
    lua_pushfstring(L, "no memory: shared dictionaries are full (--shared-mem %f bytes)",
                    (double)ml_sdict_capacity());
  }
  return 2;
}

/* n, or nil and the message of rc. */
static int number_or_fail(lua_State *L, int rc, double n) {
  if (rc != ML_SD_OK) return fail(L, rc);
  lua_pushnumber(L, n);
  return 1;
}

/* dict:get(key) -> value or nil */
static int l_get(lua_State *L) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  ml_sval_copy_t v;
  if (ml_sdict_get(d, k, klen, &v) != ML_SD_OK) {
    lua_pushnil(L);
    return 1;
  }
  if (v.type == ML_SV_NUM) lua_pushnumber(L, v.num);
  else if (v.type == ML_SV_BOOL) lua_pushboolean(L, v.num != 0);
  else {
    lua_pushlstring(L, v.str, v.len);
    ml_sval_copy_free(&v);
  }
  return 1;
}

/* set, add, safe_set, safe_add: (key, value[, ttl]) -> true, nil, forcible | nil, err.
 * A nil value deletes. */
static int store(lua_State *L, int flags) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  int vt = lua_type(L, 3);
  luaL_argcheck(L, vt == LUA_TNIL || vt == LUA_TNONE || vt == LUA_TSTRING ||
                vt == LUA_TNUMBER || vt == LUA_TBOOLEAN, 3,
                "a shared value is a string, a number or a boolean");
  ml_sval_t v = {0};
  if (vt == LUA_TSTRING) {
    v.type = ML_SV_STR;
    v.str = lua_tolstring(L, 3, &v.len);
  } else if (vt == LUA_TNUMBER) {
    v.type = ML_SV_NUM;
    v.num = lua_tonumber(L, 3);
  } else {
    v.type = ML_SV_BOOL;
    v.num = lua_toboolean(L, 3);
  }
  double ttl = check_ttl(L, 4);
  int forcible = 0;
  int rc = ml_sdict_set(d, k, klen, vt == LUA_TNIL || vt == LUA_TNONE ? NULL : &v, ttl,
                        flags, &forcible);
  if (rc != ML_SD_OK) return fail(L, rc);
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, forcible);
  return 3;
}

static int l_set(lua_State *L) { return store(L, 0); }
static int l_add(lua_State *L) { return store(L, ML_SD_ADD); }
static int l_safe_set(lua_State *L) { return store(L, ML_SD_SAFE); }
static int l_safe_add(lua_State *L) { return store(L, ML_SD_ADD | ML_SD_SAFE); }

/* dict:delete(key) -> true */
static int l_delete(lua_State *L) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  int forcible;
  ml_sdict_set(d, k, klen, NULL, 0, 0, &forcible);
  lua_pushboolean(L, 1);
  return 1;
}

/* dict:incr(key, by[, init[, ttl]]) -> new value, nil, forcible | nil, err. Atomic across
 * threads and processes; ttl applies when init creates the key. */
static int l_incr(lua_State *L) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  double by = luaL_checknumber(L, 3);
  int has_init = !lua_isnoneornil(L, 4);
  double init = has_init ? luaL_checknumber(L, 4) : 0;
  double ttl = check_ttl(L, 5);
  double v = 0;
  int forcible = 0;
  int rc = ml_sdict_incr(d, k, klen, by, has_init ? &init : NULL, ttl, &v, &forcible);
  if (rc != ML_SD_OK || !forcible) return number_or_fail(L, rc, v);
  lua_pushnumber(L, v);
  lua_pushnil(L);
  lua_pushboolean(L, 1);
  return 3;
}

/* dict:ttl(key) -> seconds left (0: never expires) | nil, "not found" */
static int l_ttl(lua_State *L) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  double left = 0;
  int rc = ml_sdict_ttl(d, k, klen, &left);
  return number_or_fail(L, rc, left);
}

/* dict:expire(key, ttl) -> true | nil, "not found"; ttl 0: never expires */
static int l_expire(lua_State *L) {
  int d;
  size_t klen;
  const char *k = check_key(L, &d, &klen);
  luaL_checknumber(L, 3);
  int rc = ml_sdict_expire(d, k, klen, check_ttl(L, 3));
  if (rc != ML_SD_OK) return fail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* dict:keys([max]) -> array of the live keys, most recently used first (max 0 or absent:
 * all) */
static int l_keys(lua_State *L) {
  int d = check_dict(L);
  int max = (int)luaL_optinteger(L, 2, 0);
  ml_buf_t keys = {0};
  int n = ml_sdict_keys(d, max, &keys);
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
  ml_sdict_flush_all(check_dict(L));
  lua_pushboolean(L, 1);
  return 1;
}

/* dict:capacity() -> bytes of the region all dictionaries share (--shared-mem) */
static int l_capacity(lua_State *L) {
  check_dict(L);
  lua_pushnumber(L, (double)ml_sdict_capacity());
  return 1;
}

/* dict:free_space() -> bytes of the region no dictionary uses */
static int l_free_space(lua_State *L) {
  check_dict(L);
  lua_pushnumber(L, (double)ml_sdict_free_space());
  return 1;
}

static int l_tostring(lua_State *L) {
  lua_pushfstring(L, "moonlet.shared.dict(\"%s\")", ml_sdict_name(check_dict(L)));
  return 1;
}

/* shared_dict(name) -> the dictionary called name, created on first use */
static int l_dict(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len > 0 && len < 256 && strlen(name) == len, 1, "expected a dictionary name");
  char err[160];
  int d = ml_sdict_open(name, len, err, sizeof err);
  if (d < 0) return luaL_error(L, "moonlet.shared: %s", err);
  int *ud = lua_newuserdata(L, sizeof *ud);
  *ud = d;
  luaL_getmetatable(L, DICT_MT);
  lua_setmetatable(L, -2);
  return 1;
}

int ml_shared_debug_lock(const char *dict, int mode, char *err, size_t errlen) {
  int d = ml_sdict_open(dict, strlen(dict), err, errlen);
  if (d < 0) return -1;
  ml_shr_lock();
  if (mode == 1) ml_shr_mark(&ML_SHR->busy_dict, (uint32_t)d + 1);
  if (mode == 2) ml_shr_mark(&ML_SHR->busy_heap, 1);
  return 0;
}

void ml_shared_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"get", l_get},           {"set", l_set},         {"add", l_add},
      {"safe_set", l_safe_set}, {"safe_add", l_safe_add}, {"incr", l_incr},
      {"delete", l_delete},     {"ttl", l_ttl},         {"expire", l_expire},
      {"keys", l_keys},         {"flush_all", l_flush_all}, {"capacity", l_capacity},
      {"free_space", l_free_space}, {NULL, NULL}};
  ml_core_class(L, DICT_MT, methods, NULL);
  luaL_getmetatable(L, DICT_MT);
  lua_pushcfunction(L, l_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "moonlet.shared.dict");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
  lua_pushcfunction(L, l_dict);
  lua_setfield(L, -2, "shared_dict");
}
