-- Lifespan: app:on_startup / app:on_shutdown / app.state through the real binary
-- (tests/apps/lifespan), and the graceful stop's steps: requests, background tasks,
-- shutdown hooks, all within --graceful-timeout.
local t = require "moonlet.testing"
local moonlet = require "moonlet"

local APP = "tests/apps/lifespan"

-- The events the hooks wrote into the app's SQLite file.
local function events(dbfile)
  local db = assert(moonlet.db.open("sqlite:" .. dbfile))
  local rows = assert(db:query("SELECT what FROM events"))
  db:close()
  local out = {}
  for i, r in ipairs(rows) do out[i] = r.what end
  return out
end

-- Where the first line matching each pattern is in text, or an error naming the missing one.
local function log_order(text, ...)
  local at = {}
  for i, pat in ipairs({ ... }) do
    at[i] = text:find(pat) or error("not in the log: " .. pat .. "\n" .. text, 2)
  end
  return at
end

local function serve(args, env)
  local dir = t.tmpdir()
  env = env or {}
  env.LIFESPAN_DB = dir .. "/app.db"
  local srv = t.server{ app = APP, args = args, env = env }
  return srv, env.LIFESPAN_DB
end

describe("startup hooks", function()
  it("run once, on the loop, in order, before the server accepts; pool threads skip them",
     function()
    local port = t.free_port()
    local srv = serve({ "--port", port, "--pool-size", "2" }, { LIFESPAN_PORT = port })
    -- the hook tried the port while it ran: refused, not queued
    srv:wait_log("connecting during startup: connect: connection refused", 1)
    local res = assert(t.request(srv.port, "GET", "/state"))   -- the first request
    assert.are.same({ ready = true, order = "1 then 2", version = "v1", startups = 1,
                      events = { "startup v1" } }, res:json())
    -- a pool thread loaded app.lua too, and has its own (empty) app.state
    assert.are.same({ ready = false, in_pool = true, startups_in_pool = 0 },
                    assert(t.request(srv.port, "GET", "/pooled")):json())
    assert.are.same(1, assert(t.request(srv.port, "GET", "/state")):json().startups)
    assert.are.same(0, srv:stop())
    local _, n = srv:stderr():gsub("startup hook 1 done", "")
    assert.are.same(1, n)
  end)

  it("that fail stop the server before it listens: exit 2, the error on stderr", function()
    local port = t.free_port()
    local dir = t.tmpdir()
    local r = t.run({ "serve", APP, "--port", tostring(port) },
                    { env = { LIFESPAN_DB = dir .. "/app.db", LIFESPAN_FAIL = "1",
                              LIFESPAN_PORT = tostring(port) } })
    assert.are.same(2, r.status)
    assert.matches("\nmoonlet: on_startup hook failed: [^\n]*tests/apps/lifespan/app%.lua:%d+: "
                   .. "database unreachable\n$", r.stderr)
    assert.matches("error on_startup hook failed: [^\n]*database unreachable\nstack traceback:",
                   r.stderr)   -- logged with its traceback
    assert.matches("connecting during startup: connect: connection refused", r.stderr)
    assert.is_falsy(r.stdout:find("listening on", 1, true))
    assert.is_falsy(r.stderr:find("startup hook 2 done", 1, true))
    assert.is_falsy(r.stderr:find("shutdown hook done", 1, true))   -- never started
    assert.are.same(nil, (t.connect(port, nil, 1)))
  end)

  it("reject a bad argument, and routers have none: a load error, exit 2", function()
    local dir = t.tmpdir()
    local r = t.run({ "serve", APP, "--port", "0" },
                    { env = { LIFESPAN_DB = dir .. "/app.db", LIFESPAN_BAD = "arg" } })
    assert.are.same(2, r.status)
    assert.matches("app%.lua:%d+: bad argument #1 to 'on_startup' %(expected a function%)",
                   r.stderr)
    r = t.run({ "serve", APP, "--port", "0" },
              { env = { LIFESPAN_DB = dir .. "/app.db", LIFESPAN_BAD = "router" } })
    assert.are.same(2, r.status)
    assert.matches("app%.lua:%d+: bad argument #1 to 'on_shutdown' %(lifespan hooks belong "
                   .. "to the app, not to a router%)", r.stderr)
  end)
end)

describe("graceful stop", function()
  it("runs the shutdown hooks after the last in-flight request has finished", function()
    local srv, db = serve()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"))
    t.sleep(0.1)
    srv:signal("TERM")
    local res = assert(c:read_response(5))
    assert.are.same({ 200, { slept = 0.5 } }, { res.status, res:json() })
    c:close()   -- else the server lingers 2 s for the client to close first
    assert.are.same(0, srv:wait(5))
    local at = log_order(srv:stderr(), "shutting down", "slow request done",
                         "shutdown hook done %(v1%)")
    assert.is_truthy(at[1] < at[2] and at[2] < at[3], srv:stderr())
    assert.are.same({ "startup v1", "shutdown v1" }, events(db))   -- the hook used the db
    srv:stop()
  end)

  it("waits for the background tasks a request spawned, then runs the hooks", function()
    local srv, db = serve()
    assert.are.same({ spawned = true }, assert(t.request(srv.port, "GET", "/spawn?s=0.6")):json())
    srv:signal("TERM")
    assert.are.same(0, srv:wait(5))
    local at = log_order(srv:stderr(), "shutting down", "background task done",
                         "shutdown hook done %(v1%)")
    assert.is_truthy(at[1] < at[2] and at[2] < at[3], srv:stderr())
    assert.are.same({ "startup v1", "shutdown v1" }, events(db))
    srv:stop()
  end)

  it("waits for req:defer and req:background work, then runs the hooks", function()
    local srv = serve()
    assert.are.same({ queued = true }, assert(t.request(srv.port, "GET", "/after?s=0.6")):json())
    srv:signal("TERM")
    assert.are.same(0, srv:wait(5))
    local at = log_order(srv:stderr(), "shutting down", "deferred cleanup done",
                         "req:background task done", "shutdown hook done %(v1%)")
    assert.is_truthy(at[1] < at[2] and at[2] < at[3] and at[3] < at[4], srv:stderr())
    srv:stop()
  end)

  it("abandons background tasks at --graceful-timeout, says so, exits 1", function()
    local srv, db = serve({ "--graceful-timeout", "0.5" })
    assert(t.request(srv.port, "GET", "/spawn?s=60"))
    srv:signal("TERM")
    assert.are.same(1, srv:wait(10))
    srv:wait_log("^%S+ warn  graceful timeout %(0%.5s%): abandoning 1 background task%(s%)$", 1)
    srv:wait_log("graceful timeout %(0%.5s%): on_shutdown hooks not run", 1)
    assert.is_falsy(srv:stderr():find("background task done", 1, true))
    assert.are.same({ "startup v1" }, events(db))
    srv:stop()
  end)
end)

describe("shutdown hooks", function()
  it("that raise are logged with a traceback, and the next one runs", function()
    local srv, db = serve(nil, { LIFESPAN_SHUTDOWN = "fail" })
    srv:signal("TERM")
    assert.are.same(0, srv:wait(5))
    srv:wait_log("error on_shutdown hook failed: [^ ]*app%.lua:%d+: flush failed$", 1)
    assert.matches("flush failed\nstack traceback:", srv:stderr())
    srv:wait_log("shutdown hook done %(v1%)", 1)
    assert.are.same({ "startup v1", "shutdown v1" }, events(db))
    srv:stop()
  end)

  it("that do not finish within --graceful-timeout are cut short: said, exit 1", function()
    local srv, db = serve({ "--graceful-timeout", "0.5" }, { LIFESPAN_SHUTDOWN = "hang" })
    srv:signal("TERM")
    assert.are.same(1, srv:wait(10))
    srv:wait_log("graceful timeout %(0%.5s%): on_shutdown hooks did not finish", 1)
    assert.is_falsy(srv:stderr():find("abandoning", 1, true))
    assert.are.same({ "startup v1" }, events(db))
    srv:stop()
  end)
end)

describe("--reload", function()
  it("runs the new code's startup hooks, then the old code's shutdown hooks", function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", t.read_file(APP .. "/app.lua"))
    local db = dir .. "/app.db"
    local srv = t.server{ app = dir, args = { "--reload" }, env = { LIFESPAN_DB = db } }
    assert.are.same("v1", assert(t.request(srv.port, "GET", "/state")):json().version)
    local at = srv:mark()
    t.write_file(dir .. "/lifespan_version.lua", 'return "v2"\n')
    srv:wait_log("reloaded", 10, at)
    srv:wait_log("shutdown hook done %(v1%)", 5, at)
    local state = assert(t.request(srv.port, "GET", "/state")):json()
    assert.are.same({ "v2", true, 2 }, { state.version, state.ready, state.startups })
    assert.are.same({ "startup v1", "startup v2", "shutdown v1" }, events(db))
    local order = log_order(srv:stderr():sub(at + 1), "startup hook 2 done %(v2%)", "reloaded",
                            "shutdown hook done %(v1%)")
    assert.is_truthy(order[1] < order[2] and order[2] < order[3], srv:stderr())

    -- new code whose startup hook fails: the old code keeps serving, nothing of it stays
    at = srv:mark()
    t.write_file(dir .. "/lifespan_version.lua", 'return "broken"\n')
    srv:wait_log("reload failed, still serving the previous code: on_startup hook failed: "
                 .. "[^ ]*app%.lua:%d+: database unreachable$", 10, at)
    assert.are.same("v2", assert(t.request(srv.port, "GET", "/state")):json().version)
    assert.are.same(0, srv:stop())
    assert.is_falsy(srv:stderr():find("shutdown hook done (broken)", 1, true))
    assert.are.same({ "startup v1", "startup v2", "shutdown v1", "startup broken",
                      "shutdown v2" }, events(db))
  end)
end)
