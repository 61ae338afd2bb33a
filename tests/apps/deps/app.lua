-- Dependencies, deferred cleanup and background tasks for tests/spec/deps_spec.lua. What
-- happens is written to the shared dict "events" (loop and pool threads alike): the spec
-- reads it through GET /events/{key}. DEPS_OVERRIDE=1 overrides current_user.
local moonlet = require "moonlet"

local events = moonlet.shared.dict("events")
local function note(key, what)
  events:set(key, (events:get(key) or "") .. what .. ";")
end

local app = moonlet.app{ title = "deps", deps = {
  counted = function(req)   -- named at app, router and route level: called once
    note(req.headers["x-key"] or "none", "counted")
    return "c"
  end,
} }

local function current_user(req)
  local token = req.headers["authorization"]
  if token ~= "Bearer good" then
    error(moonlet.http_error(401, "Not authenticated", { ["www-authenticate"] = "Bearer" }))
  end
  return { name = "ada" }
end

local function settings() return { greeting = "hello" } end

-- A database-like dependency: begins, then commits or rolls back in cleanup.
local function db(req)
  local key = req.headers["x-key"]
  note(key, "begin")
  req:defer(function(err)
    if err == nil then note(key, "commit")
    else note(key, "rollback:" .. (moonlet.is_error(err) and "e" or tostring(err):match("^[^\n]*"))) end
  end)
  return { key = key }
end

-- req:dep inside a dependency; its own cleanup runs before db's (reverse order)
local function greeter(req)
  local s = req:dep(settings)
  local d = req:dep(db)
  req:defer(function() note(d.key, "greeter-cleanup") end)
  return s.greeting .. ", " .. req:dep(current_user).name
end

local counted = app.deps.counted
local r = moonlet.router{ prefix = "/r", deps = { counted = counted, user = current_user } }
r:get("/me", { deps = { counted = counted, greet = greeter } }, function(req)
  return { user = req.deps.user.name, greet = req.deps.greet, counted = req.deps.counted }
end)
r:get("/me/pooled", { pool = true, deps = { greet = greeter } }, function(req)
  return { user = req.deps.user.name, greet = req.deps.greet, pooled = moonlet.in_pool() }
end)
app:include(r)

app:get("/fail", { deps = { db = db } }, function() error("boom") end)
app:get("/fail/pooled", { pool = true, deps = { db = db } }, function() error("boom") end)
app:get("/http_error", { deps = { db = db } }, function()
  error(moonlet.http_error(409, "conflict"))
end)
app:get("/ok", { deps = { db = db } }, function(req) return { key = req.deps.db.key } end)
app:get("/ok/pooled", { pool = true, deps = { db = db } }, function(req)
  return { key = req.deps.db.key }
end)
-- the handler waits; the spec's client leaves meanwhile
app:get("/slow", { deps = { db = db } }, function()
  moonlet.sleep(5)
  return "late"
end)
-- cleanup that waits until the client has its response and says so through /release
local function after_release(req)
  local key = req.params.key
  req:defer(function()
    while not events:get(key .. ":released") do moonlet.sleep(0.01) end
    note(key, "deferred-after-release")
  end)
  return "sent"
end
app:get("/after/{key}", after_release)
app:get("/after/{key}/pooled", { pool = true }, after_release)
app:post("/release/{key}", function(req)
  events:set(req.params.key .. ":released", true)
  return "ok"
end)

-- background tasks: on the loop, on the pool, from a pooled route; a failing one
local function bg_note(key, what) note(key, what) end
app:post("/bg/{key}", function(req)
  local key = req.params.key
  req:defer(function() note(key, "deferred") end)
  req:background(bg_note, key, "bg1")
  req:background(function() error("bg failed") end)
  req:background({ pool = true }, function(k)
    local m = require "moonlet"
    local ev = m.shared.dict("events")
    ev:set(k, (ev:get(k) or "") .. "bg-pool:" .. tostring(m.in_pool()) .. ";")
  end, key)
  return 202, { queued = true }
end)
app:post("/bg/{key}/pooled", { pool = true }, function(req)
  local key = req.params.key
  req:background(function(k, w) note(k, w .. ":" .. tostring(moonlet.in_pool())) end, key, "bg")
  return 202, { queued = true }
end)
app:post("/bg/{key}/fails", function(req)
  req:background(bg_note, req.params.key, "never")
  error(moonlet.http_error(400, "no"))
end)

-- req:defer(fn, "handler"): before the response
local function tx_now(req)
  local key = req.headers["x-key"]
  req:defer(function(err)
    if req.headers["x-commit-fails"] then error("commit failed") end
    note(key, err == nil and "committed-before-response" or "rolled-back-before-response")
  end, "handler")
  req:defer(function() note(key, "after-response") end)
  return key
end
app:get("/now", { deps = { tx = tx_now } }, function(req)
  if req.headers["x-fail"] then error("handler broke") end
  return { events = events:get(req.deps.tx) }
end)
app:get("/now/slow", { deps = { tx = tx_now } }, function()
  moonlet.sleep(5)
end)
app:get("/now/pooled", { pool = true, deps = { tx = tx_now } }, function(req)
  return { events = events:get(req.deps.tx) }
end)
app:get("/now/bad", function(req) req:defer(function() end, "later") end)

app:get("/events/{key}", function(req)
  return { events = events:get(req.params.key) or "" }
end)
app:get("/nodeps", function(req)
  return { deps = req.deps }
end)

if os.getenv("DEPS_OVERRIDE") then
  app:override(current_user, function() return { name = "test-user" } end)
end
local bad = os.getenv("DEPS_BAD")
if bad == "route" then app:get("/x", { deps = { a = 1 } }, function() end) end
if bad == "app" then moonlet.app{ deps = "no" } end
if bad == "router" then moonlet.router{ deps = { 1 } } end
if bad == "tags" then moonlet.router{ tags = "users" } end
-- x runs once per request, whether named (deps), asked for by y (req:dep) or by the
-- handler; z asks for itself (a cycle: 500)
local function xdep(req)
  note(req.headers["x-key"], "x")
  return { n = 1 }
end
local function ydep(req) return req:dep(xdep).n + 1 end
for _, pooled in ipairs({ false, true }) do
  app:get(pooled and "/once/pooled" or "/once", { pool = pooled, deps = { x = xdep, y = ydep } },
          function(req)
    return { same = req:dep(xdep) == req.deps.x, y = req.deps.y }
  end)
end
local function zdep(req) return req:dep(zdep) end
app:get("/cycle", { deps = { z = zdep } }, function() return "unreachable" end)

return app
