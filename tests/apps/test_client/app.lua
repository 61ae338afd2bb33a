-- The in-process test client's app (tests/spec/test_client_spec.lua): one of each thing a
-- request can meet, for coroutine and pooled routes where both apply.
local moonlet = require "moonlet"
local s = moonlet.schema
local app = moonlet.app{ title = "test_client" }

local M = {}
function M.db() return "real db" end   -- a dependency the spec overrides
app.deps_module = M

local events = moonlet.shared.dict("test_client_events")   -- hooks write here
app:on_startup(function() events:set("startup", "ran") end)
app:on_shutdown(function() events:set("shutdown", "ran") end)

app:use(function(req, next)
  local res = next(req)
  res.headers["x-middleware"] = "ran"
  return res
end)

for prefix, opts in pairs{ ["/co"] = {}, ["/pool"] = { pool = true } } do
  app:get(prefix .. "/hello", opts, function(req)
    return { hello = req.query.name or "world", pooled = moonlet.in_pool() }
  end)
  app:post(prefix .. "/echo", opts, function(req)
    return { json = req:json(), ctype = req.headers["content-type"] }
  end)
  app:post(prefix .. "/form", opts, function(req) return req:form() end)
  app:get(prefix .. "/cookies", opts, function(req) return req.cookies end)
  app:get(prefix .. "/set", opts, function(req)
    local q = req.query
    return 204, nil, { ["set-cookie"] = moonlet.cookie(q.name, q.value,
                                                        { max_age = tonumber(q.max_age) }) }
  end)
  app:get(prefix .. "/items/{id}", {
    pool = opts.pool,
    params = { id = s.integer{ min = 1 } },
    query = { limit = s.integer{ max = 10, default = 5 } },
  }, function(req) return { id = req.params.id, limit = req.query.limit } end)
end

app:get("/dep", { deps = { db = M.db } }, function(req) return { db = req.deps.db } end)
app:get("/sleep", function() moonlet.sleep(0.01); return "slept" end)
app:get("/stream", function()
  return moonlet.stream(function(send)
    for i = 1, 3 do
      send("part " .. i .. "\n")
      moonlet.sleep(0.001)
    end
  end)
end)
app:get("/boom", function() error("boom") end)
app:websocket("/ws", function(ws)
  while true do
    local data, kind = ws:receive()
    if not data then return end
    if data == "bye" then return ws:close(4000, "bye") end
    if kind == "binary" then ws:send_binary(data) else ws:send("echo: " .. data) end
  end
end)
app:static("/static", "public")

return app
