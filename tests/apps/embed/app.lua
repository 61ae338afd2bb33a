-- tests/apps/embed: served by tests/embed_host.c, which preloads the C module "hostinfo"
-- (see there) and emits events from its own threads (embedding_spec.lua).
local moonlet = require "moonlet"
local hostinfo = require "hostinfo"

local app = moonlet.app{ title = "embed" }
local ticks = moonlet.cond()
local seen = {}   -- event name -> values received, in order

local function state()
  local m = require "hostinfo"   -- the same table again: open ran once in this state
  return { name = m.name(), id = m.state_id, same = m == hostinfo, pool = moonlet.in_pool(),
           upvalue_ok = m.upvalue_ok }
end

app:get("/state", state)
app:get("/pool/state", { pool = true }, state)
app:get("/run_in_pool/state", function()
  return moonlet.run_in_pool("embed_pool.state")
end)
app:get("/opens", function() return { opens = hostinfo.opens() } end)
app:post("/add", function(req) return { total = hostinfo.add(tonumber(req.query.n)) } end)
app:post("/pool/add", { pool = true }, function(req)
  return { total = hostinfo.add(tonumber(req.query.n)) }
end)

-- the same C state through the FFI (ml_host_preload_ffi): from the loop, the pool, a reload
local hostffi = require "hostffi"
local function ffi_state()
  local m = require "hostffi"
  return { one = m.one(), scale = m.scale(4), name = require("ffi").string(m.name()),
           same = m == hostffi, pool = moonlet.in_pool() }
end
app:get("/ffi/state", ffi_state)
app:get("/pool/ffi/state", { pool = true }, ffi_state)
app:post("/ffi/add", function(req) return { total = tonumber(hostffi.add(tonumber(req.query.n))) } end)
app:post("/pool/ffi/add", { pool = true }, function(req)
  return { total = tonumber(hostffi.add(tonumber(req.query.n))) }
end)

-- the same route with and without a call into the C module (bench/run.sh "embed"), and
-- with the call through the FFI
app:get("/plain", function() return { n = 1 } end)
app:get("/cfn", function() return { n = hostinfo.one() } end)
app:get("/ffi", function() return { n = hostffi.one() } end)
-- the C call alone, n times in a loop, against the same loop in Lua: ns per call
app:get("/call_ns", function(req)
  local n, one, s = tonumber(req.query.n) or 1e6, hostinfo.one, 0
  local t0 = moonlet.now()
  for _ = 1, n do s = s + one() end
  local t1 = moonlet.now()
  for _ = 1, n do s = s + 1 end
  local t2 = moonlet.now()
  return { c = (t1 - t0) / n * 1e9, lua = (t2 - t1) / n * 1e9, sum = s }
end)

app:on_event("tick", function(v)
  seen.tick = seen.tick or {}
  seen.tick[#seen.tick + 1] = v
  ticks:notify_all(v)
end)
app:on_event("slow", function(v)
  moonlet.sleep(0.01)   -- a coroutine: it may wait
  seen.slow = seen.slow or {}
  seen.slow[#seen.slow + 1] = v
end)
app:on_event("fail", function()
  error("the handler failed on purpose")
end)

app:get("/seen", function(req)
  return seen[req.query.name] or moonlet.array{}
end)

app:get("/ticks", function(req)
  local n = tonumber(req.query.n) or 1
  return moonlet.sse(function(emit)
    emit{ comment = "ready" }
    for _ = 1, n do
      local v = ticks:wait()
      emit{ event = "tick", data = v }
    end
  end)
end)

return app
