-- {{name}}: a moonlet app (see README.md). app.lua returns the app; this directory is on
-- package.path, so `require "store"` would load store.lua next to it.
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "{{name}}", version = "0.1.0" }

-- A coroutine on the event loop, the default kind of route: for waiting through moonlet
-- (moonlet.sleep, moonlet.http, moonlet.db yield instead of blocking). The path parameter
-- and the query are validated: a bad one answers 422 before the handler runs.
app:get("/hello/{name}", {
  params = { name = s.string{ min_length = 1, max_length = 40 } },
  query = { excited = s.boolean{ default = false } },
}, function(req)
  local message = "hello, " .. req.params.name
  if req.query.excited then message = message .. "!" end
  return { message = message }            -- a table: 200, application/json
end)

-- A pooled route: it runs on a pool thread with its own Lua state, for work that would
-- hold the event loop (CPU-heavy Lua, blocking C calls through the FFI).
app:get("/primes", {
  pool = true,
  query = { below = s.integer{ min = 2, max = 10000000, default = 100 } },
}, function(req)
  local below, count, composite = req.query.below, 0, {}
  for i = 2, below - 1 do
    if not composite[i] then
      count = count + 1
      for j = i * i, below - 1, i do composite[j] = true end
    end
  end
  return { below = below, primes = count }
end)

return app
