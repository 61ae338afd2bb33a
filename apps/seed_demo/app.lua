-- apps/seed_demo: the experiment of shared/seeds in Lua. Four routes each wait 1 s:
--   /a  coroutine route calling a BLOCKING sleep (the mistake: requests run one by one,
--       and moonlet logs "blocked the event loop" for every one of them)
--   /b  coroutine route handing the blocking sleep to the pool (moonlet.run_in_pool)
--   /c  coroutine route with moonlet.sleep (yields: all run at once)
--   /d  pooled route ({ pool = true }) calling the blocking sleep on a pool thread
-- and /cpu?n=N burns CPU in pure Lua on a pool thread: several run on all cores at once.
local moonlet = require "moonlet"
local blocking = require "blocking"

local app = moonlet.app{ title = "seed demo", version = "1.0.0" }

app:get("/a", function()
  blocking.sleep(1)
  return { route = "a" }
end)

app:get("/b", function()
  moonlet.run_in_pool("blocking.sleep", 1)
  return { route = "b" }
end)

app:get("/c", function()
  moonlet.sleep(1)
  return { route = "c" }
end)

app:get("/d", { pool = true }, function()
  blocking.sleep(1)
  return { route = "d" }
end)

app:get("/cpu", { pool = true }, function(req)
  local n = tonumber(req.query.n) or 1e7
  local x = 0
  for i = 1, n do x = (x + i * i) % 1000003 end
  return { route = "cpu", n = n, x = x }
end)

-- the same tiny answer from both kinds of route, to compare their overhead (make bench)
app:get("/hello", function() return { message = "hello" } end)
app:get("/hello-pool", { pool = true }, function() return { message = "hello" } end)

return app
