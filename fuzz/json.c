/* The JSON decoder and encoder (core/bridge/json.c) round trip: any text json_decode
 * takes is encoded again (never raising: what is decoded can be encoded), and that text
 * decodes to an equal value whose encoding decodes to it once more. */
/* FUZZ_NO_LEAKS: a Lua state (scripts/fuzz.sh) */
#include "fuzz.h"
#include <string.h>

static const char *const lua_src = FUZZ_LUA_DEEP_EQUAL
    "function round_trip(text)\n"
    "  local v, err = core.json_decode(text)\n"
    "  if err then return true end\n"
    "  local ok, t2 = pcall(core.json_encode, v)\n"
    "  if not ok then return false, 'decoded, not encoded: ' .. tostring(t2) end\n"
    "  local v2, err2 = core.json_decode(t2)\n"
    "  if err2 then return false, 'its encoding does not decode: ' .. err2 .. ': ' .. t2 end\n"
    "  local same, where = deep_equal(v, v2)\n"
    "  if not same then return false, 'not the same value again: ' .. where end\n"
    "  local t3 = core.json_encode(v2)\n"
    "  if #t3 ~= #t2 then return false, 'encodings differ in length: ' .. t2 .. ' / ' .. t3 end\n"
    "  return true\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_State *L = fuzz_lua(lua_src);
  lua_getglobal(L, "round_trip");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 2, 0)) FUZZ_CHECK(0, "%s", lua_tostring(L, -1));
  FUZZ_CHECK(lua_toboolean(L, -2), "%s", lua_tostring(L, -1));
  lua_settop(L, 0);
  return 0;
}
