-- The app of workers_spec.lua: which process answers (its pid, read from /proc), and a
-- slow route for graceful stops, and moonlet.shared counts from every worker's loop and pool
-- threads at once.
local moonlet = require "moonlet"
local app = moonlet.app{ title = "workers" }

local function pid()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("*l")
  f:close()
  return tonumber(stat:match("^(%d+)"))
end
local PID = pid()

app:get("/pid", function() return { pid = PID, version = "v1" } end)
app:get("/slow", function(req)
  moonlet.sleep(tonumber(req.query.s) or 1)
  return { pid = PID, slept = true }
end)

local hits = moonlet.shared.dict("hits")
-- n increments on this worker's loop (yielding every 50) while a pool thread does n more
app:get("/incr", function(req)
  local n = tonumber(req.query.n) or 1
  moonlet.gather(function() return moonlet.run_in_pool("counting.incr", n) end, function()
    for i = 1, n do
      hits:incr("n", 1, 0)
      if i % 50 == 0 then moonlet.sleep(0) end
    end
  end)
  hits:incr("by:" .. PID, 1, 0)
  return { pid = PID }
end)
app:get("/count", function()
  local by = {}
  for _, k in ipairs(hits:keys()) do
    local pid = k:match("^by:(%d+)$")
    if pid then by[pid] = hits:get(k) end
  end
  return { n = hits:get("n") or 0, by = by }
end)

return app
