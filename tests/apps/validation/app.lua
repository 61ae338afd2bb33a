-- Validated routes for tests/spec/validation_spec.lua: every route twice, under /co (a
-- coroutine) and /pool ({ pool = true }). Handlers echo what they received, so a spec sees
-- the converted values. VALIDATION_BAD=<case> makes app.lua fail to load.
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "validation" }

for _, mode in ipairs{ "co", "pool" } do
  local pool = mode == "pool"
  local function route(method, path, opts, handler)
    opts.pool = pool
    app:route(method, "/" .. mode .. path, opts, handler)
  end

  route("GET", "/items", {
    query = {
      limit = s.integer{ min = 1, max = 100 },
      page = s.integer{ default = 1 },
      q = s.string{ optional = true, min_length = 2, max_length = 5 },
      flag = s.boolean{ optional = true },
      ratio = s.number{ optional = true, min = 0, max = 1 },
      kind = s.string{ optional = true, enum = { "a", "b", "c" } },
      code = s.string{ optional = true, pattern = "^%u%u%d$" },
      tags = s.array(s.string{}, { optional = true, max_items = 3 }),
      ids = s.array(s.integer{}, { default = moonlet.array{} }),
    },
  }, function(req) return { query = req.query, pooled = moonlet.in_pool() } end)

  route("GET", "/users/{id}", { params = { id = s.integer{ min = 1 } } },
        function(req) return { id = req.params.id, pooled = moonlet.in_pool() } end)

  route("GET", "/headers", {
    headers = {
      x_token = s.string{ min_length = 3 },
      x_count = s.integer{ optional = true },
      x_ids = s.array(s.integer{}, { optional = true }),
    },
  }, function(req)
    return { token = req.headers["x-token"], count = req:header("X-Count"),
             ids = req.headers["x-ids"], agent = req.headers["user-agent"] }
  end)

  route("POST", "/things", {
    body = s.object{
      title = s.string{ min_length = 1 },
      price = s.number{ min = 0 },
      qty = s.integer{ default = 1 },
      tags = s.array(s.string{}, { default = {} }),
      owner = s.object({ name = s.string{}, email = s.string{ optional = true } },
                       { optional = true }),
      items = s.array(s.object{ name = s.string{}, n = s.integer{ min = 1 } },
                      { optional = true, min_items = 1 }),
      paid = s.boolean{ default = false },
    },
  }, function(req) return { body = req:json(), pooled = moonlet.in_pool() } end)

  route("POST", "/strict", { body = s.object({ title = s.string{} }, { additional = false }) },
        function(req) return { body = req:json() } end)

  route("POST", "/form", {
    form = true,
    body = s.object{
      user = s.string{ min_length = 1 },
      age = s.integer{},
      remember = s.boolean{ default = false },
      roles = s.array(s.string{}, { optional = true }),
    },
  }, function(req) return { form = req:form(), pooled = moonlet.in_pool() } end)

  route("POST", "/all/{id}", {
    params = { id = s.integer{} },
    query = { limit = s.integer{} },
    headers = { x_token = s.string{} },
    body = s.object{ title = s.string{}, n = s.integer{} },
  }, function(req)
    return { id = req.params.id, limit = req.query.limit, token = req.headers["x-token"],
             body = req:json() }
  end)

  route("POST", "/maybe", { body = s.object({ a = s.integer{} }, { optional = true }) },
        function(req) return { body = req:json() or "none" } end)

  route("GET", "/plain", {}, function(req) return { q = req.query.q or "none" } end)
end

-- moonlet.schema.json_schema, served so a spec can read it
local thing = s.object({
  title = s.string{ min_length = 1, max_length = 50, description = "The title",
                    example = "towel" },
  size = s.integer{ min = 1, max = 10, default = 5 },
  tags = s.array(s.string{ enum = { "a", "b" } }, { min_items = 1, max_items = 2,
                                                    optional = true }),
  price = s.number{ min = 0 },
}, { additional = false, description = "A thing" })
app:get("/json_schema", function() return moonlet.schema.json_schema(thing) end)

-- Bytes the GC heap grows by while valid scalar input is checked 1,000 times (the JIT off
-- and its traces flushed, so only validation itself is counted): the spec expects 0.
app:get("/alloc", function()
  local list = s.fields({
    n = s.integer{ min = 1, max = 100 }, x = s.number{ min = 0 }, b = s.boolean{},
    name = s.string{ min_length = 1, max_length = 10, pattern = "^%a+$" },
    kind = s.string{ enum = { "a", "b" } }, page = s.integer{ optional = true },
  }, "query")
  local how, t = { strings = true }, {}
  local function round()
    t.n, t.x, t.b, t.name, t.kind = "42", "1.5", "true", "towel", "b"
    s.reset(); s.push("query"); s.check_fields(list, t, t, how); s.pop()
    return s.errors()
  end
  jit.off()
  jit.flush()
  collectgarbage("collect")
  collectgarbage("stop")
  for _ = 1, 10 do round() end   -- warm up: the Lua stack (shrunk by a collection) regrows
  local grew, errs = 0, nil
  for _ = 1, 1000 do   -- summed round by round: only what a round itself allocates counts
    local before = collectgarbage("count")
    errs = errs or round()
    grew = grew + (collectgarbage("count") - before) * 1024
  end
  collectgarbage("restart")
  jit.on()
  return { bytes = grew, errors = errs or false, n = t.n, b = t.b }
end)

local bad = os.getenv("VALIDATION_BAD")
local cases = {
  unknown_option = function() s.integer{ minimum = 1 } end,
  bad_pattern = function() s.string{ pattern = "[a-" } end,
  bad_enum = function() s.string{ enum = { 1, 2 } } end,
  bad_default = function() s.integer{ min = 1, default = 0 } end,
  array_item = function() s.array({}) end,
  object_field = function() s.object{ title = "string" } end,
  object_option = function() s.object({ a = s.string{} }, { extra = false }) end,
  query_table = function() app:get("/x", { query = s.string{} }, function() end) end,
  query_field = function() app:get("/x", { query = { q = 1 } }, function() end) end,
  body_schema = function() app:post("/x", { body = { title = s.string{} } }, function() end) end,
  form_bool = function() app:post("/x", { form = "yes", body = s.object{} }, function() end) end,
  form_body = function() app:post("/x", { form = true }, function() end) end,
  params_path = function()
    app:get("/x/{id}", { params = { idd = s.integer{} } }, function() end)
  end,
  query_object = function()
    app:get("/x", { query = { o = s.object{} } }, function() end)
  end,
}
if bad then cases[bad]() end

return app
