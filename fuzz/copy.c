/* The packed-value format that carries Lua values into the pool and back
 * (core/bridge/copy.c): any bytes ml_copy_unpack takes give values that pack again and
 * unpack to equal values; bytes it refuses push nothing and raise nothing. The values are
 * given to the JSON encoder too (arbitrary tables: mixed keys, holes, NaN, array-marked). */
/* FUZZ_NO_LEAKS: a Lua state (scripts/fuzz.sh) */
#include "fuzz.h"
#include "copy.h"
#include "json.h"
#include <string.h>

static const char *const lua_src = FUZZ_LUA_DEEP_EQUAL;

/* Unpacks data in protected mode: 1 with the values on the stack, 0 if refused. */
static int unpack_cb(lua_State *L) {
  size_t len;
  const char *p = lua_tolstring(L, 1, &len);   /* stays at 1: p stays valid */
  lua_settop(L, 1);
  int n = ml_copy_unpack(L, p, len);
  if (n < 0) {
    FUZZ_CHECK(lua_gettop(L) == 1, "a refused input left %d values", lua_gettop(L) - 1);
    return 0;
  }
  FUZZ_CHECK(lua_gettop(L) == n + 1, "%d values pushed, %d said", lua_gettop(L) - 1, n);
  return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_lua(lua_src);
  lua_settop(L, 0);
  lua_pushcfunction(L, unpack_cb);
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, LUA_MULTRET, 0)) FUZZ_CHECK(0, "unpack raised: %s", lua_tostring(L, -1));
  int n = lua_gettop(L);
  if (n == 0) return 0;
  char err[256];
  ml_buf_t b = {0};
  FUZZ_CHECK(ml_copy_pack(L, 1, n, &b, err, sizeof err) == 0, "unpacked, not packed: %s", err);
  lua_pushcfunction(L, unpack_cb);
  lua_pushlstring(L, b.data, b.len);
  if (lua_pcall(L, 1, LUA_MULTRET, 0)) FUZZ_CHECK(0, "unpack raised: %s", lua_tostring(L, -1));
  FUZZ_CHECK(lua_gettop(L) == 2 * n, "%d values packed, %d unpacked", n, lua_gettop(L) - n);
  for (int i = 1; i <= n; i++) {
    lua_getglobal(L, "deep_equal");
    lua_pushvalue(L, i);
    lua_pushvalue(L, n + i);
    lua_call(L, 2, 2);
    FUZZ_CHECK(lua_toboolean(L, -2), "value %d not the same again: %s", i, lua_tostring(L, -1));
    lua_pop(L, 2);
    ml_buf_t j = {0};
    ml_json_encode(L, i, &j, err, sizeof err);   /* either way: no crash, no report */
    ml_buf_free(&j);
  }
  ml_buf_free(&b);
  lua_settop(L, 0);
  return 0;
}
