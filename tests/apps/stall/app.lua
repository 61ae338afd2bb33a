-- The app the stall specs drive: routes that hold the event loop, the seeds' /a mistake.
local moonlet = require "moonlet"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local app = moonlet.app{ title = "stall" }

-- holds the whole loop for s seconds (a blocking sleep in a coroutine route)
app:get("/block", function(req)
  local s = tonumber(req.query.s) or 1
  ffi.C.poll(nil, 0, math.floor(s * 1000))
  return { blocked = s }
end)

-- never yields, never returns: nothing on the loop can run any more
app:get("/spin", function()
  local n = 0
  while true do n = n + 1 end
end)

app:get("/sleep", function(req)
  local s = tonumber(req.query.s) or 1
  moonlet.sleep(s)
  return { slept = s }
end)

app:get("/hello", function() return { message = "hello" } end)

return app
