-- Every state that loads this app starts a background task that never ends: the loop's
-- state and each pool thread's. Pooled routes, run_in_pool, shutdown and reload must all
-- work anyway.
local moonlet = require "moonlet"

local ticks = moonlet.shared.dict("ticks")
local where = moonlet.in_pool() and "pool" or "loop"

moonlet.spawn(function()
  while true do
    moonlet.sleep(0.02)
    ticks:incr(where, 1, 0)
  end
end)

local app = moonlet.app{ title = "background" }

app:get("/pooled", { pool = true }, function() return { where = "pool" } end)
app:get("/call", function()
  return { v = moonlet.run_in_pool(function(x) return x + 1 end, 41) }
end)
app:get("/ticks", function()
  return { loop = ticks:get("loop") or 0, pool = ticks:get("pool") or 0 }
end)

return app
