-- The app fuzz/request.c serves: a few routes of each kind the request path has (a Lua
-- handler, a pooled one, validation, JSON and form bodies, a stream, errors, middleware).
-- Nothing here sleeps or waits on the network: every request ends on its own.
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "fuzz" }

app:use(function(req, next)
  local res = next(req)
  res.headers["x-mw"] = req.method
  return res
end)

app:get("/", function() return "hello" end)

app:get("/items/{id:int}", {
  query = { limit = s.integer{ min = 1, max = 100, default = 10 },
            tag = s.array(s.string{ max_length = 8 }, { optional = true }) },
  headers = { x_token = s.string{ min_length = 2, optional = true } },
}, function(req)
  return { id = req.params.id, limit = req.query.limit, tag = req.query.tag,
           token = req.headers.x_token }
end)

app:route({ "GET", "POST", "PUT", "DELETE", "PATCH" }, "/echo/{rest}", function(req)
  return { method = req.method, path = req.path, rest = req.params.rest, query = req.query,
           headers = req.headers, body = req.body, cookie = req.cookies and req.cookies.a }
end)

app:post("/json", {
  body = s.object({ name = s.string{ max_length = 20 }, qty = s.integer{ default = 1 },
                    tags = s.array(s.string{}, { optional = true }) }),
}, function(req)
  return 201, req:json()
end)

app:post("/raw-json", function(req) return { v = req:json() } end)

app:post("/form", function(req)
  local out = {}
  for k, v in pairs(req:form()) do
    out[k] = type(v) == "table" and (v.filename or #v) or v
  end
  return out
end)

app:get("/pool/{name}", { pool = true }, function(req)
  return { name = req.params.name, q = req.query.q, pooled = moonlet.in_pool() }
end)
app:post("/pool/echo", { pool = true }, function(req) return req.body end)

app:get("/stream", function(req)
  local n = tonumber(req.query.n) or 2
  if n > 5 then n = 5 end
  return moonlet.stream(function(send)
    for i = 1, n do send("line " .. i .. "\n") end
  end)
end)

app:get("/error", function() error("boom") end)
app:get("/http-error", function() error(moonlet.http_error(418, "teapot")) end)
app:get("/status/{code:int}", function(req)
  return moonlet.response{ status = req.params.code < 200 and 200 or req.params.code % 600,
                           headers = { ["x-a"] = req.query.h }, body = "" }
end)

return app
