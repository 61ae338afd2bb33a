-- tests/apps/openapi: every schema feature and route option /openapi.json describes, a
-- router's tags, a pooled route, a WebSocket route and a static mount (both left out).
-- OPENAPI / DOCS in the environment: moonlet.app's openapi / docs options ("false": off).
local moonlet = require "moonlet"
local s = moonlet.schema

local function opt(name)
  local v = os.getenv(name)
  if v == "false" then return false end
  return v
end

local app = moonlet.app{ title = "Every feature", version = "2.3.4",
                         description = "The OpenAPI test app", openapi = opt("OPENAPI"),
                         docs = opt("DOCS") }

local item = s.object({
  name = s.string{ min_length = 1, max_length = 40, description = "The item's name",
                   example = "lamp" },
  price = s.number{ min = 0, max = 1e6, example = 9.5 },
  count = s.integer{ min = 1, default = 1 },
  color = s.string{ enum = { "red", "green" }, optional = true },
  level = s.integer{ enum = { 1, 2, 3 }, optional = true },
  sku = s.string{ pattern = "^%u%u%-%d+$", optional = true },
  tags = s.array(s.string{}, { min_items = 0, max_items = 5, default = {} }),
  dims = s.object({ w = s.number{}, h = s.number{} }, { optional = true,
                    description = "Width and height" }),
  gift = s.boolean{ default = false },
}, { additional = false })

app:get("/items/{id:int}", {
  summary = "Read an item", description = "One item, by id.",
  params = { id = s.integer{ min = 1, description = "The item's id" } },
  query = { q = s.string{ optional = true, max_length = 10 },
            limit = s.integer{ min = 1, max = 100, default = 10 },
            sort = s.array(s.string{ enum = { "asc", "desc" } }, { optional = true }) },
  headers = { x_token = s.string{ description = "A token", example = "secret" } },
  response = s.object{ id = s.integer{}, q = s.string{ optional = true } },
}, function(req)
  return { id = req.params.id, q = req.query.q, limit = req.query.limit }
end)

app:post("/items", { body = item, tags = { "items" }, response = item }, function(req)
  return 201, req:json()
end)

app:put("/items/{id:int}", { body = item, pool = true, tags = { "items" } }, function(req)
  return { id = req.params.id, name = req:json().name }
end)

app:post("/login", { form = true, body = s.object{ user = s.string{}, pass = s.string{} } },
         function(req)
  return { user = req:form().user }
end)

app:get("/old", { deprecated = true, summary = "Old" }, function() return "old" end)

app:get("/files/{rest:path}", function(req) return req.params.rest end)

app:route({ "GET", "POST" }, "/both", function(req) return req.method end)

-- bodies that do not match their response schema: under --reload an error is logged
local shape = s.object{ id = s.integer{}, name = s.string{} }
app:get("/wrong", { response = shape }, function() return { id = "x" } end)
app:get("/wrong_pooled", { response = shape, pool = true }, function()
  return { id = 1, name = 5 }
end)
app:get("/right", { response = shape }, function() return { id = 1, name = "a" } end)

local users = moonlet.router{ prefix = "/users", tags = { "users" } }
users:get("/{name}", { tags = { "people" } }, function(req) return { name = req.params.name } end)
app:include(users)

-- BAD_ROUTE: a route option /openapi.json refuses, or a route where the document goes
local bad = os.getenv("BAD_ROUTE")
if bad == "taken" then
  app:get("/openapi.json", function() return {} end)
elseif bad then
  local wrong = { summary = 1, deprecated = "yes", response = {}, tags = { 1 } }
  app:get("/bad", { [bad] = wrong[bad] }, function() return "" end)
end

app:websocket("/ws", function(ws) ws:close() end)
app:static("/static", "public")

return app
