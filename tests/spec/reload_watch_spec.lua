-- --reload in development: file system events (new directories, editors' rename-on-save,
-- delete and create), the polling fallback, broken code at start, no failed request
-- while reloading under load, and nothing kept by 100 reloads.
local t = require "moonlet.testing"
local cjson = require "cjson"

local function app_source(version, extra)
  return ([[
local moonlet = require "moonlet"
local app = moonlet.app{}
app:get("/version", function() return { version = %q } end)
app:get("/pooled", { pool = true }, function() return { version = %q } end)
%s
return app
]]):format(version, version, extra or "")
end

local function get(srv, path)
  local res = assert(t.request(srv.port, "GET", path or "/version"))
  return res.status == 200 and res:json().version or res.status
end

local function wait_version(srv, v, path)
  local deadline = t.now() + 5
  while t.now() < deadline do
    if get(srv, path) == v then return true end
    t.sleep(0.005)
  end
  error("still not serving " .. v .. " (serving " .. tostring(get(srv, path)) .. ")")
end

local function count(s, pattern)
  local n = 0
  for _ in s:gmatch(pattern) do n = n + 1 end
  return n
end

describe("--reload watching the app directory", function()
  local dir, srv
  before_each(function()
    dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("v1"))
  end)
  after_each(function() if srv then srv:stop() end srv = nil end)

  it("watches with events, not polling, from before the app loads (no edit missed)", function()
    srv = t.server{ app = dir, args = { "--reload" } }
    assert.is_nil(srv:stderr():find("polling", 1, true))
    t.write_file(dir .. "/app.lua", app_source("v2"))
    wait_version(srv, "v2")
  end)

  it("picks up a directory made after the start, and the modules in it", function()
    srv = t.server{ app = dir, args = { "--reload" } }
    os.execute("mkdir -p " .. t.shell_quote(dir .. "/lib/deep"))
    t.write_file(dir .. "/lib/deep/name.lua", 'return "n1"\n')
    t.write_file(dir .. "/app.lua", app_source("v2", [[
app:get("/name", function() return { version = require("lib.deep.name") } end)]]))
    wait_version(srv, "n1", "/name")
    t.write_file(dir .. "/lib/deep/name.lua", 'return "n2"\n')   -- only the module changes
    wait_version(srv, "n2", "/name")
  end)

  it("reloads after an editor's rename-on-save and after delete and create", function()
    srv = t.server{ app = dir, args = { "--reload" } }
    t.write_file(dir .. "/.app.lua.swp", app_source("v2"))
    assert(os.rename(dir .. "/.app.lua.swp", dir .. "/app.lua"))
    wait_version(srv, "v2")
    assert(os.remove(dir .. "/app.lua"))
    t.write_file(dir .. "/app.lua", app_source("v3"))
    wait_version(srv, "v3")
    assert.are.same("v3", get(srv, "/pooled"))
  end)

  it("does not reload for files that are not code", function()
    srv = t.server{ app = dir, args = { "--reload" } }
    local at = srv:mark()
    for i = 1, 20 do t.write_file(dir .. "/data.txt", "write " .. i) end
    t.write_file(dir .. "/app.lua", app_source("v2"))
    wait_version(srv, "v2")
    srv:wait_log("reloaded", 5, at)
    t.sleep(0.2)
    assert.are.same(1, count(srv:stderr():sub(at + 1), "reloaded"))
  end)

  it("polls where asked to (MOONLET_RELOAD_POLL=1)", function()
    srv = t.server{ app = dir, args = { "--reload" }, env = { MOONLET_RELOAD_POLL = "1" } }
    srv:wait_log("reload: polling .* every 250 ms %(MOONLET_RELOAD_POLL%)", 5)
    t.write_file(dir .. "/app.lua", app_source("v2"))
    wait_version(srv, "v2")
  end)
end)

describe("--reload with code that does not load at start", function()
  local dir, srv
  before_each(function() dir = t.tmpdir() end)
  after_each(function() if srv then srv:stop() end srv = nil end)

  it("listens, answers every request with the error, and loads the fix", function()
    t.write_file(dir .. "/app.lua", "local moonlet = require 'moonlet'\nlocal app = \n")
    srv = t.server{ app = dir, args = { "--reload" } }
    for _, m in ipairs({ "GET", "POST", "DELETE" }) do
      local res = assert(t.request(srv.port, m, "/anything/at/all"))
      assert.are.same(500, res.status)
      assert.matches("^app failed to load: .*app%.lua:3: unexpected symbol near '<eof>'$",
                     res:json().detail)
    end
    srv:wait_log("the app failed to load, answering every request with the error", 5)
    local page = t.run({ "-c", "curl -s -H 'Accept: text/html' http://127.0.0.1:" .. srv.port
                               .. "/page" }, { bin = "sh" })
    assert.matches("<!DOCTYPE html>", page.stdout, 1, true)
    assert.matches("app failed to load: .*app%.lua:3: unexpected symbol near "
                   .. "&#39;&lt;eof&gt;&#39;", page.stdout)
    t.write_file(dir .. "/app.lua", app_source("fixed"))
    wait_version(srv, "fixed")
    assert.are.same("fixed", get(srv, "/pooled"))
  end)

  it("does the same when an on_startup hook fails", function()
    t.write_file(dir .. "/app.lua", app_source("v1", [[
app:on_startup(function() error("no database") end)]]))
    srv = t.server{ app = dir, args = { "--reload" } }
    local res = assert(t.request(srv.port, "GET", "/version"))
    assert.are.same(500, res.status)
    assert.matches("app failed to load: on_startup hook failed: .*no database", res:json().detail)
    t.write_file(dir .. "/app.lua", app_source("v2"))
    wait_version(srv, "v2")
  end)

  it("still exits 2 without --reload", function()
    t.write_file(dir .. "/app.lua", "local app = \n")
    local r = t.run({ "serve", dir, "--port", "0" })
    assert.are.same(2, r.status)
    assert.matches("app%.lua:2: unexpected symbol", r.stderr)
  end)
end)

describe("--reload under load", function()
  local dir, srv
  lazy_setup(function()
    dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("r0"))
    -- under AddressSanitizer (make test-asan) freed memory waits in a quarantine (256 MB)
    -- before it is reused: kept small here, or RSS could not be flat
    local asan = os.getenv("ASAN_OPTIONS")
    srv = t.server{ app = dir, args = { "--reload", "--log-level", "warn" },
                    env = { ASAN_OPTIONS = asan and asan .. ":quarantine_size_mb=1" or false } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("fails no request during 20 reloads", function()
    local stop = dir .. "/stop"
    local load = t.spawn({ "tests/support/reload_load.py", tostring(srv.port), "/version", stop },
                         { bin = "/usr/bin/python3" })
    t.sleep(0.2)
    for i = 1, 20 do
      t.write_file(dir .. "/app.lua", app_source("r" .. i))
      wait_version(srv, "r" .. i)
    end
    t.write_file(stop, "")
    assert.are.same(0, load:wait(20))
    local counts = cjson.decode(load:stdout())
    assert.are.same({}, counts.errors)
    assert.are.same(0, counts.failed)
    assert.is_true(counts.ok > 100, "only " .. counts.ok .. " requests ran")
  end)

  it("keeps memory and descriptors flat over 100 reloads", function()
    local function reloads(from, to)
      for i = from, to do
        t.write_file(dir .. "/app.lua", app_source("m" .. i))
        wait_version(srv, "m" .. i)
        get(srv, "/pooled")
      end
    end
    reloads(1, 10)   -- warm: pool states, allocator arenas
    t.sleep(0.3)     -- retired apps are freed by a 250 ms reaper
    local fd0, rss0 = srv:fd_count(), srv:rss_kb()
    reloads(11, 110)
    t.sleep(0.3)
    local fd1, rss1 = srv:fd_count(), srv:rss_kb()
    print(string.format("100 reloads: fds %d -> %d, RSS %d -> %d kB", fd0, fd1, rss0, rss1))
    assert.are.same(fd0, fd1)
    assert.is_true(rss1 - rss0 < 10240, "RSS grew " .. (rss1 - rss0) .. " kB")
  end)
end)
