-- Lifespan hooks for tests/spec/lifespan_spec.lua. LIFESPAN_DB is a SQLite file the
-- startup hook fills and the shutdown hook writes to; LIFESPAN_PORT, the port the server
-- is given, which the startup hook tries to reach; LIFESPAN_FAIL=1 (or a version
-- "broken") makes a startup hook fail after waiting; LIFESPAN_BAD=<case> makes app.lua
-- misuse the hooks; LIFESPAN_SHUTDOWN=fail adds a shutdown hook that raises, =hang one
-- that never ends. A module lifespan_version.lua, when there is one, names the code in
-- the log lines and the database (--reload).
local moonlet = require "moonlet"

local app = moonlet.app{ title = "lifespan" }
local counts = moonlet.shared.dict("lifespan")
local has_version, version = pcall(require, "lifespan_version")
if not has_version then version = "v1" end
local log = moonlet.log.info

local bad = os.getenv("LIFESPAN_BAD")
if bad == "arg" then app:on_startup("not a function") end
if bad == "router" then moonlet.router{ prefix = "/r" }:on_shutdown(function() end) end

app:on_startup(function(a)
  assert(a == app)
  counts:incr("startups", 1, 0)
  if moonlet.in_pool() then counts:incr("startups_in_pool", 1, 0) end
  local port = os.getenv("LIFESPAN_PORT")
  if port then   -- the server's own port, while its startup hooks run
    local res, err = moonlet.http.get("http://127.0.0.1:" .. port .. "/state", { timeout = 2 })
    log("connecting during startup: " .. (res and ("status " .. res.status) or err))
  end
  moonlet.sleep(0.3)                                   -- yields: a coroutine on the loop
  local db = assert(moonlet.db.open("sqlite:" .. assert(os.getenv("LIFESPAN_DB"))))
  assert(db:exec("CREATE TABLE IF NOT EXISTS events (what TEXT)"))
  assert(db:exec("INSERT INTO events (what) VALUES (?)", "startup " .. version))
  app.state.db = db
  log("startup hook 1 done (" .. version .. ")")
end)

app:on_startup(function()
  if os.getenv("LIFESPAN_FAIL") or version == "broken" then
    moonlet.sleep(0.5)
    error("database unreachable")
  end
  app.state.ready = true                               -- after hook 1: they run in order
  app.state.order = app.state.db and "1 then 2" or "2 first"
  log("startup hook 2 done (" .. version .. ")")
end)

local shutdown = os.getenv("LIFESPAN_SHUTDOWN")
app:on_shutdown(function()
  if shutdown == "fail" then error("flush failed") end
  if shutdown == "hang" then moonlet.sleep(3600) end
end)

app:on_shutdown(function()
  moonlet.sleep(0.05)
  assert(app.state.db:exec("INSERT INTO events (what) VALUES (?)", "shutdown " .. version))
  log("shutdown hook done (" .. version .. ")")
end)

app:get("/state", function()
  local rows = assert(app.state.db:query("SELECT what FROM events"))
  local events = {}
  for i, r in ipairs(rows) do events[i] = r.what end
  return { ready = app.state.ready, order = app.state.order, version = version,
           startups = counts:get("startups"), events = events }
end)

app:get("/pooled", { pool = true }, function()
  return { ready = app.state.ready or false, in_pool = moonlet.in_pool(),
           startups_in_pool = counts:get("startups_in_pool") or 0 }
end)

app:get("/slow", function(req)
  moonlet.sleep(tonumber(req.query.s))
  log("slow request done")
  return { slept = tonumber(req.query.s) }
end)

-- req:defer and req:background work that outlives the response
app:get("/after", function(req)
  local s = tonumber(req.query.s)
  req:defer(function()
    moonlet.sleep(s / 2)
    log("deferred cleanup done")
  end)
  req:background(function()
    moonlet.sleep(s / 2)
    log("req:background task done")
  end)
  return { queued = true }
end)

-- a background task the request leaves running, itself spawning another
app:get("/spawn", function(req)
  local s = tonumber(req.query.s)
  moonlet.spawn(function()
    moonlet.sleep(s / 2)
    moonlet.spawn(function()
      moonlet.sleep(s / 2)
      log("background task done")
    end)
  end)
  return { spawned = true }
end)

return app
