-- Middleware for tests/spec/middleware_spec.lua: request_id, CORS and gzip from
-- moonlet.middleware, then two tracing middleware (a, b) and one that may answer alone.
-- MW_BAD=<case> makes app.lua fail to load.
local moonlet = require "moonlet"
local mw = moonlet.middleware

local app = moonlet.app{ title = "middleware" }

local function trace(name)
  return function(req, next)
    local t = rawget(req, "trace") or {}
    rawset(req, "trace", t)
    t[#t + 1] = name .. ">"
    local res = next(req)
    t[#t + 1] = "<" .. name
    res.headers["x-trace"] = table.concat(t)
    return res
  end
end

app:use(mw.request_id())
app:use(mw.cors{ origins = { "https://app.example" }, methods = { "GET", "POST" },
                 headers = { "X-Token" }, expose = { "X-Total" }, credentials = true,
                 max_age = 300 })
app:use(mw.gzip{ min_size = 100 })
app:use(trace("a"))
app:use(trace("b"))
app:use(function(req, next)
  if req.headers["x-block"] then   -- answers without calling next
    return { status = 403, body = { detail = "blocked by middleware" }, headers = {} }
  end
  if req.headers["x-raise"] then error(moonlet.http_error(401, "no token")) end
  if req.headers["x-crash"] then error("middleware bug") end
  if req.headers["x-bad"] then return "not a response" end
  local res = next(req)
  if req.headers["x-replace"] then
    return { status = 202, body = "replaced " .. res.status, headers = {} }
  end
  return res
end)

local big = string.rep("moonlet compresses this line. ", 50)   -- 1500 bytes

app:get("/hello", function(req)
  local t = rawget(req, "trace")
  t[#t + 1] = "handler"
  return { message = "hello", request_id = req.request_id }
end)
app:get("/big", function() return big end)
app:get("/big/json", function() return { text = big } end)
app:get("/small", function() return "tiny" end)
app:get("/encoded", function()
  return 200, big, { ["Content-Encoding"] = "identity-custom" }
end)
app:get("/headers", function()
  return 200, { ok = true }, { ["X-Total"] = "3", ["Vary"] = "Cookie" }
end)
app:get("/pooled", { pool = true }, function(req)
  return 200, { pooled = moonlet.in_pool(), path = req.path, id = req.params.id },
         { ["x-from"] = "pool" }
end)
app:get("/pooled/{id:int}/big", { pool = true }, function(req)
  return { id = req.params.id, text = big }
end)
app:get("/pooled/fail", { pool = true }, function() error("pool handler failed") end)
app:get("/fail", function() error("handler failed") end)
app:post("/items", function(req) return 201, { created = req.body } end)
app:post("/upload/pooled", { pool = true }, function(req)
  local f = req:form()
  local fh = assert(io.open(f.file.path, "rb"))
  local data = fh:read("*a")
  fh:close()
  return { note = f.note, size = f.file.size, data = data }
end)

local bad = os.getenv("MW_BAD")
if bad == "star" then app:use(mw.cors{ origins = { "*" }, credentials = true }) end
if bad == "option" then app:use(mw.gzip{ minimum_size = 1 }) end
if bad == "use" then app:use("nope") end
if bad == "origins" then app:use(mw.cors{}) end
return app
