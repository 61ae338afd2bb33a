-- moonlet.shared's OpenResty-style methods, eviction in a small region and counts from
-- coroutines and pool threads at once, for tests/spec/shared_spec.lua (run with a small
-- --shared-mem).
local moonlet = require "moonlet"

local app = moonlet.app{ title = "shared" }
local counters = moonlet.shared.dict("counters")

local function result(ok, err, forcible) return { ok = ok or false, err = err, forcible = forcible } end

app:get("/api", function()
  local d = moonlet.shared.dict("api")
  d:flush_all()
  local r = {}
  r.safe_set = result(d:safe_set("a", "1"))
  r.safe_add_new = result(d:safe_add("b", 2, 10))
  r.safe_add_again = result(d:safe_add("b", 3))
  r.set = result(d:set("c", true))
  r.ttl_never = d:ttl("a")
  r.ttl_b = d:ttl("b")
  r.ttl_missing = result(d:ttl("zz"))
  r.expire = result(d:expire("a", 0.05))
  r.expire_missing = result(d:expire("zz", 1))
  r.ttl_a = d:ttl("a")
  moonlet.sleep(0.1)
  r.a_after = d:get("a") == nil
  r.expire_forever = result(d:expire("b", 0))
  r.ttl_b_after = d:ttl("b")
  r.capacity = d:capacity()
  r.free_space = d:free_space()
  d:set("big", string.rep("x", 10000))
  r.free_space_after = d:free_space()
  r.bad_ttl = select(2, pcall(d.expire, d, "b", -1))
  return r
end)

-- fills "lru" with 1000-byte values until set has evicted n times; k1 is read all along
app:get("/lru", function(req)
  local d = moonlet.shared.dict("lru")
  d:flush_all()
  local evictions, i = 0, 0
  local v = string.rep("v", 1000)
  while evictions < tonumber(req.query.n) do
    i = i + 1
    local ok, err, forcible = d:set("k" .. i, v)
    if not ok then return 500, { err = err } end
    if forcible then evictions = evictions + 1 end
    d:get("k1")
  end
  local present = {}
  for j = 1, i do present[j] = d:get("k" .. j) ~= nil end
  local safe = result(d:safe_set("one more", v))
  local keys = d:keys()
  return { written = i, present = present, safe = safe, count = #keys, first = keys[1],
           big = result(d:set("big", string.rep("x", 2000000))) }
end)

local function bump(n)
  for _ = 1, n do counters:incr("total", 1, 0) end
end
-- half the increments on the loop (in two runs, with a yield between), half on a pool
-- thread, at the same time
app:get("/incr", function(req)
  local n = tonumber(req.query.n)
  moonlet.gather(function()
    bump(n / 4)
    moonlet.sleep(0.001)
    bump(n / 4)
  end, function()
    moonlet.run_in_pool(function(m)
      local d = require("moonlet").shared.dict("counters")
      for _ = 1, m do d:incr("total", 1, 0) end
    end, n / 2)
  end)
  return { ok = true }
end)
app:get("/total", function() return { v = counters:get("total") } end)
-- holds the loop for ?s= seconds doing nothing but incr (the region's lock taken and given
-- back millions of times): a process killed meanwhile is likely to die holding it
app:get("/spin", function(req)
  local t0, n = moonlet.now(), 0
  while moonlet.now() - t0 < tonumber(req.query.s) do
    for _ = 1, 1000 do counters:incr("spin", 1, 0) end
    n = n + 1000
  end
  return { n = n }
end)

return app
