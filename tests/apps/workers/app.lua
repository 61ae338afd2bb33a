-- The app of workers_spec.lua: which process answers (its pid, read from /proc), and a
-- slow route for graceful stops.
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

return app
