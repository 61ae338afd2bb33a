/* What the libFuzzer targets in fuzz/ share (README "Fuzzing"): each target is one file
 * with LLVMFuzzerTestOneInput, built by `make fuzz-build` with clang's libFuzzer, ASan and
 * UBSan against the library compiled the same way. A broken invariant is reported with
 * FUZZ_CHECK, which aborts: libFuzzer saves the input as a crash. */
#ifndef ML_FUZZ_H
#define ML_FUZZ_H
#include "lstate.h"
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                        \
      fputc('\n', stderr);                                                 \
      abort();                                                             \
    }                                                                      \
  } while (0)

/* A Lua state made once per process, with moonlet's modules and `core` (moonlet.core) as
 * a global, and `src` (Lua source, may be NULL) run in it; aborts if that fails. */
static inline lua_State *fuzz_lua(const char *src) {
  static lua_State *L;
  if (L) return L;
  L = ml_lua_new(NULL, NULL);
  FUZZ_CHECK(L != NULL, "no Lua state");
  if (luaL_dostring(L, "core = require 'moonlet.core'") ||
      (src && luaL_dostring(L, src))) {
    fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
    abort();
  }
  return L;
}

/* Lua: deep_equal(a, b) -> true, or false and where they differ (nan equals nan; tables
 * used as keys are only counted: they are other tables in the copy). */
#define FUZZ_LUA_DEEP_EQUAL                                                             \
  "function deep_equal(a, b, path)\n"                                                   \
  "  path = path or '$'\n"                                                              \
  "  if type(a) ~= type(b) then return false, path .. ': ' .. type(a) .. ' ~= ' .. type(b) end\n" \
  "  if type(a) == 'number' and a ~= a and b ~= b then return true end\n"               \
  "  if type(a) ~= 'table' then\n"                                                      \
  "    if a == b then return true end\n"                                                \
  "    return false, path .. ': ' .. tostring(a) .. ' ~= ' .. tostring(b)\n"            \
  "  end\n"                                                                             \
  "  local ka, kb = 0, 0\n"                                                             \
  "  for k, v in pairs(a) do\n"                                                         \
  "    if type(k) == 'table' then ka = ka + 1 else\n"                                   \
  "      local ok, where = deep_equal(v, b[k], path .. '.' .. tostring(k))\n"           \
  "      if not ok then return false, where end\n"                                      \
  "    end\n"                                                                           \
  "  end\n"                                                                             \
  "  for k in pairs(b) do\n"                                                            \
  "    if type(k) == 'table' then kb = kb + 1\n"                                        \
  "    elseif a[k] == nil then return false, path .. '.' .. tostring(k) .. ': missing' end\n" \
  "  end\n"                                                                             \
  "  if ka ~= kb then return false, path .. ': ' .. ka .. ' ~= ' .. kb .. ' table keys' end\n" \
  "  if getmetatable(a) ~= getmetatable(b) then return false, path .. ': metatables' end\n" \
  "  return true\n"                                                                     \
  "end\n"

#endif
