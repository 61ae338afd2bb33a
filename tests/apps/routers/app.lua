-- Routers for tests/spec/routers_spec.lua: a prefix, a nested router, a pooled route in a
-- router, "" and "/" under a prefix. ROUTERS_BAD=<case> makes app.lua fail to load.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "routers" }

local users = moonlet.router{ prefix = "/users" }
users:get("", function() return { list = true } end)
users:get("/", function() return { slash = true } end)
users:get("/{id:int}", function(req) return { user = req.params.id } end)
users:post("/{id:int}", { pool = true }, function(req)
  return 201, { user = req.params.id, pooled = moonlet.in_pool() }
end)

local keys = moonlet.router{ prefix = "/keys" }
keys:get("/{name}", function(req) return { key = req.params.name, path = req.path } end)
users:include(keys)            -- nested: /users/keys/{name}

local plain = moonlet.router()  -- no prefix
plain:get("/plain", function() return "plain" end)

app:include(users)
app:include(plain)
users:get("/late", function() return "added after include" end)   -- not in the app

local bad = os.getenv("ROUTERS_BAD")
if bad == "prefix" then moonlet.router{ prefix = "users/" } end
if bad == "option" then moonlet.router{ prefix = "/x", tagz = {} } end
if bad == "empty" then
  local r = moonlet.router()
  r:get("", function() end)
  app:include(r)
end
if bad == "twice" then app:include(plain) end

-- tags: the router's first, then the route's; nested routers add theirs in front
local inner = moonlet.router{ prefix = "/in", tags = { "inner" } }
inner:get("/t", { tags = { "route" } }, function() return "t" end)
local outer = moonlet.router{ prefix = "/out", tags = { "outer" } }
outer:include(inner)
outer:get("/u", function() return "u" end)
app:include(outer)
app:get("/tags", function()
  local out = {}
  for _, r in ipairs(app.routes) do
    if r.opts.tags then out[r.path] = r.opts.tags end
  end
  return out
end)
if bad == "not_router" then app:include(app) end

return app
