-- Pooled routes, run_in_pool and shared dictionaries, for tests/spec/pool_spec.lua.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "pool" }
local counters = moonlet.shared.dict("counters")

app:get("/p/{id:int}", { pool = true }, function(req)
  return { id = req.params.id, q = req.query.q, tags = req.query.tag, h = req.headers["x-h"],
           in_pool = moonlet.in_pool(), method = req.method, path = req.path }
end)
app:get("/p/name/{name}", { pool = true }, function(req) return { name = req.params.name } end)
app:post("/p/echo", { pool = true }, function(req) return 201, req:json(), { ["x-pool"] = "yes" } end)
app:get("/p/error", { pool = true }, function() error("pool boom") end)
app:get("/p/http-error", { pool = true }, function()
  error(moonlet.http_error(409, "conflict in pool"))
end)
app:get("/p/sleep", { pool = true }, function(req)
  local s = tonumber(req.query.s) or 0.1
  counters:incr("ran:" .. (req.query.tag or "-"), 1, 0)
  moonlet.sleep(s)
  return { slept = s }
end)
app:get("/p/text", { pool = true }, function() return "from the pool" end)
-- a pattern longer than 255 bytes: the pool thread finds its route all the same
app:get("/p/long/" .. string.rep("x", 300) .. "/{id:int}", { pool = true }, function(req)
  return { id = req.params.id }
end)
app:get("/p/gather", { pool = true }, function()
  local a, b = moonlet.gather(function() moonlet.sleep(0.2); return 1 end,
                              function() moonlet.sleep(0.2); return 2 end)
  return { a = a, b = b }
end)
app:get("/p/gather-first", { pool = true }, function()
  local a, b = moonlet.gather(function() moonlet.sleep(0.01); return "a", "extra" end,
                              function() return nil, "failed" end)
  return { a = a, b = b == nil }
end)
app:get("/p/nested", { pool = true }, function()
  return { v = moonlet.run_in_pool(function(x) return x * 3 end, 5) }
end)

app:get("/rip/add", function(req)
  local sum, t = moonlet.run_in_pool(function(a, b)
    return a + b, { sum = a + b, list = { a, b } }
  end, tonumber(req.query.a), tonumber(req.query.b))
  return { sum = sum, t = t }
end)
app:get("/rip/module", function()
  return { v = moonlet.run_in_pool("helpers.double", 21) }
end)
app:get("/rip/error", function()
  local ok, err = pcall(moonlet.run_in_pool, function() error("deep failure") end)
  return { ok = ok, err = tostring(err) }
end)
app:get("/rip/raise", function()
  moonlet.run_in_pool(function() error("unhandled pool failure") end)
end)
app:get("/rip/upvalue", function()
  local x = 1
  local ok, err = pcall(moonlet.run_in_pool, function() return x end)
  return { ok = ok, err = err }
end)
app:get("/rip/bad-arg", function()
  local ok, err = pcall(moonlet.run_in_pool, function() end, print)
  local t = {}
  t.self = t
  local ok2, err2 = pcall(moonlet.run_in_pool, function() end, t)
  local ok3, err3 = pcall(moonlet.run_in_pool, function() return print end)
  return { ok = ok, err = err, ok2 = ok2, err2 = err2, ok3 = ok3, err3 = err3 }
end)
app:get("/rip/roundtrip", function()
  local v = moonlet.run_in_pool(function(x) return x end,
    { list = moonlet.array{}, n = moonlet.null, nested = { { 1, "two", true, false } },
      [7] = "seven", f = 1.5 })
  return v
end)
app:get("/rip/missing", function()
  local ok, err = pcall(moonlet.run_in_pool, "helpers.nope")
  return { ok = ok, err = err }
end)

app:get("/shared/incr", function(req)
  return { v = counters:incr(req.query.k or "n", 1, 0) }
end)
app:get("/shared/incr-pool", { pool = true }, function(req)
  return { v = moonlet.shared.dict("counters"):incr(req.query.k or "n", 1, 0) }
end)
app:get("/shared/get", function(req)
  return { v = counters:get(req.query.k) }
end)
app:get("/shared/api", function()
  local d = moonlet.shared.dict("api")
  d:flush_all()
  local r = {}
  r.set = d:set("s", "str")
  d:set("n", 42)
  d:set("b", false)
  r.s, r.n, r.b = d:get("s"), d:get("n"), d:get("b")
  r.add_again = { ok = d:add("s", "x") or false, err = select(2, d:add("s", "x")) }
  r.incr_str = { ok = d:incr("s", 1) or false, err = select(2, d:incr("s", 1)) }
  r.incr_missing = { ok = d:incr("zz", 1) or false, err = select(2, d:incr("zz", 1)) }
  r.incr_init = d:incr("c", 5, 10)
  d:delete("n")
  r.n_after = d:get("n") == nil
  local keys = d:keys()
  table.sort(keys)
  r.keys = keys
  d:set("ttl", "short", 0.05)
  r.ttl_before = d:get("ttl")
  moonlet.sleep(0.1)
  r.ttl_after = d:get("ttl") == nil
  r.bad = select(2, pcall(d.set, d, "t", {}))
  return r
end)
-- finalizers that use a dictionary while the same dictionary is being read
app:get("/shared/gc", function()
  local d = moonlet.shared.dict("gc")
  d:set("big", string.rep("v", 4096))
  local hits = 0
  for i = 1, 20000 do
    local p = newproxy(true)
    getmetatable(p).__gc = function() if d:get("big") then hits = hits + 1 end end
    local v = d:get("big")
    if i % 100 == 0 then d:keys() end
    assert(#v == 4096)
  end
  collectgarbage()
  return { ok = true, finalized = hits > 0 }
end)

app:get("/shared/fill", function()
  local d = moonlet.shared.dict("fill")
  for i = 1, 100000 do
    local ok, err = d:safe_set("k" .. i, string.rep("x", 1000))
    if not ok then return { stored = i - 1, err = err } end
  end
  return { stored = 100000 }
end)

-- a run_in_pool call that holds its thread for ?s= seconds (the backpressure spec)
app:get("/rip/sleep", function(req)
  local done = moonlet.run_in_pool(function(s, tag)
    local m = require("moonlet")
    m.shared.dict("counters"):incr("ran:" .. tag, 1, 0)
    m.sleep(s)
    return true
  end, tonumber(req.query.s), req.query.tag or "-")
  return { done = done }
end)

-- which Lua state runs the route, and which one its run_in_pool call (the executor spec)
local function states()
  return { route = require("helpers").state_id,
           call = moonlet.run_in_pool(function() return require("helpers").state_id end) }
end
app:get("/p/state", { pool = true }, states)

-- pool_handoff_spec: a pooled job that holds its thread's CPU for ms milliseconds, and one
-- that leaves a background task on its thread (it counts in "bg" after a 50 ms sleep)
app:get("/p/spin", { pool = true }, function(req)
  local until_t = os.clock() + (tonumber(req.query.ms) or 1) / 1000
  while os.clock() < until_t do end
  return { spun = true }
end)
app:get("/p/bg", { pool = true }, function()
  moonlet.spawn(function()
    moonlet.sleep(0.05)
    counters:incr("bg", 1, 0)
  end)
  return { spawned = true }
end)
app:get("/rip/state", states)

return app
