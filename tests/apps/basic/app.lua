-- The app the specs drive: one route per behaviour under test.
local moonlet = require "moonlet"
local users = require "routes.users"   -- APPDIR is on package.path

local app = moonlet.app{ title = "basic" }

users.install(app)

app:get("/", function() return { root = true } end)
app:get("/text", function() return "plain text" end)
app:get("/status", function() return 201, { created = true }, { ["x-extra"] = "1" } end)
app:get("/nobody", function() return 204 end)
app:get("/response", function()
  return moonlet.response{ status = 202, headers = { ["content-type"] = "text/csv" }, body = "a,b\n" }
end)
app:get("/multi-header", function()
  return 200, "ok", { ["set-cookie"] = { "a=1", "b=2" } }
end)
app:get("/empty-list", function() return { items = moonlet.array{} , obj = {} } end)
app:get("/teapot", function() error(moonlet.http_error(418, "I'm a teapot")) end)
app:get("/notfound", function()
  error(moonlet.http_error(404, "Item not found", { ["x-why"] = "missing" }))
end)
app:get("/boom", function() local t = nil; return t.field end)
app:get("/bad-header", function() return 200, "x", { ["x-evil"] = "a\r\nSet-Cookie: pwned=1" } end)
app:get("/bad-header-name", function() return 200, "x", { ["x evil"] = "a" } end)
app:get("/bad-status", function() return 99, "x" end)
app:get("/nan", function() return { v = 0/0 } end)
app:get("/query", function(req) return req.query end)
app:get("/headers", function(req) return req.headers end)
app:get("/path/{rest}", function(req) return { rest = req.params.rest, path = req.path } end)
app:route({ "GET", "POST" }, "/method", function(req) return { method = req.method } end)
app:put("/put", function(req) return { body = req.body } end)
app:delete("/items/{id:int}", function(req) return { deleted = req.params.id } end)
app:post("/form", function(req) return req:form() end)
app:post("/echo", function(req) return { body = req.body, len = #req.body } end)
app:post("/json", function(req) return req:json() end)
app:get("/sleep", function(req)
  local s = tonumber(req.query.s) or 1
  moonlet.sleep(s)
  return { slept = s, path = req.path, q = req.query.s }
end)
app:get("/sleep-then-boom", function()
  moonlet.sleep(0.01)
  error("late failure")
end)
app:get("/yield", function() coroutine.yield() end)
app:get("/big", function(req)
  return string.rep("x", tonumber(req.query.n) or 100000)
end)
app:get("/unicode", function() return { s = "héllo \"q\" \\ / \n\t\1" } end)
app:get("/numbers", function() return { i = 42, neg = -7, f = 0.1, big = 2^53, small = 1e-7 } end)

return app
