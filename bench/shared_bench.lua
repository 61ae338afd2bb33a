-- bench/run.sh's shared section (run by `moonlet test`): 1e6 calls of each moonlet.shared
-- operation from one Lua loop in this runner (the single-process fast path: a region of
-- this process, its lock private), best of 3 rounds; and set in a full dictionary, where
-- every write evicts the least recently used entry.
local moonlet = require "moonlet"

local N = tonumber(os.getenv("BENCH_N")) or 1000000

local function best(fn)
  local b = math.huge
  for _ = 1, 3 do
    local t0 = os.clock()
    fn()
    b = math.min(b, os.clock() - t0)
  end
  return b / N * 1e9
end

describe("bench", function()
  it("shared", function()
    local d = moonlet.shared.dict("bench")
    d:set("n", 0)
    d:set("s", "a string value")
    local rows = {
      { "incr (existing key)", function() for _ = 1, N do d:incr("n", 1) end end },
      { "get (number)", function() for _ = 1, N do d:get("n") end end },
      { "get (14-byte string)", function() for _ = 1, N do d:get("s") end end },
      { "set (number, 1000 keys)", function() for i = 1, N do d:set("k" .. (i % 1000), i) end end },
    }
    local full = moonlet.shared.dict("bench_full")
    local v = string.rep("x", 1000)
    for i = 1, 1e6 do if not full:safe_set("f" .. i, v) then break end end
    rows[#rows + 1] = { "set evicting (1000-byte values, full)",
                        function() for i = 1, N do full:set("e" .. i, v) end end }
    for _, r in ipairs(rows) do print(string.format("%-40s %6.0f ns/op", r[1], best(r[2]))) end
  end)
end)
