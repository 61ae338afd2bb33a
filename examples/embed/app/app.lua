-- examples/embed/app: the Lua side of the counter service (counter.c). The count is C's:
-- the module "counter" is preloaded by the program into every Lua state, pool threads'
-- included.
local moonlet = require "moonlet"
local counter = require "counter"
local s = moonlet.schema

local app = moonlet.app{ title = "counter", version = "1.0.0" }

app:get("/count", function()
  return { value = counter.get() }
end)

app:post("/count/add", { query = { n = s.integer{ default = 1 } } }, function(req)
  return { value = counter.add(req.query.n) }
end)

-- a pooled route: it runs on a pool thread, in that thread's Lua state, with the same C count
app:post("/count/reset", { pool = true }, function()
  return { was = counter.reset() }
end)

-- counter.c's thread emits "tick" every second; the handler runs on the loop, as a
-- coroutine, and wakes every /events stream
local ticks = moonlet.cond()
app:on_event("tick", function(v)
  ticks:notify_all(v)
end)

app:get("/events", function()
  return moonlet.sse(function(emit)
    while true do
      local v = ticks:wait()
      if not emit{ id = v.tick, data = { value = v.value } } then return end
    end
  end)
end)

return app
