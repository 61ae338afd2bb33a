-- --reload: new code for new requests, old code finishes what it started, bad code is
-- refused while the old code keeps serving.
local t = require "moonlet.testing"

local function app_source(version)
  return ([[
local moonlet = require "moonlet"
local util = require "lib.util"
local app = moonlet.app{}
app:get("/version", function() return { version = %q, util = util.name } end)
app:get("/slow", function() moonlet.sleep(0.6) return { version = %q } end)
app:get("/pooled", { pool = true }, function() return { version = %q } end)
return app
]]):format(version, version, version)
end

describe("--reload", function()
  local dir, srv
  lazy_setup(function()
    dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("v1"))
    t.write_file(dir .. "/lib/util.lua", 'return { name = "util1" }\n')
    srv = t.server{ app = dir, args = { "--reload" } }
  end)
  lazy_teardown(function() srv:stop() end)

  local function get(path) return assert(t.request(srv.port, "GET", path)):json() end

  local function wait_version(v)
    local deadline = t.now() + 5
    while t.now() < deadline do
      if get("/version").version == v then return true end
      t.sleep(0.05)
    end
    error("still not serving " .. v)
  end

  it("serves changed code to new requests, finishing running ones on the old code", function()
    assert.are.same({ version = "v1", util = "util1" }, get("/version"))
    assert.are.same({ version = "v1" }, get("/pooled"))
    local c = t.connect(srv.port)
    c:send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.05)
    t.write_file(dir .. "/app.lua", app_source("v2"))
    wait_version("v2")
    srv:wait_log("reloaded", 2)
    assert.are.same({ version = "v1" },
                    assert(c:read_response(5)):json())   -- started before the reload
    c:close()
    assert.are.same({ version = "v2" }, get("/pooled"))
  end)

  it("reloads when a required module changes", function()
    t.write_file(dir .. "/lib/util.lua", 'return { name = "util2" }\n')
    local deadline = t.now() + 5
    while get("/version").util ~= "util2" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same({ version = "v2", util = "util2" }, get("/version"))
  end)

  it("keeps serving the old code when the new code does not load", function()
    t.write_file(dir .. "/app.lua", "local broken = \n")
    srv:wait_log("reload failed, still serving the previous code: .*app%.lua:%d+:", 5)
    assert.are.same("v2", get("/version").version)
    t.write_file(dir .. "/app.lua", app_source("v3"))
    wait_version("v3")
  end)

  it("logs a required module's error with that module's file:line and reason", function()
    local at = srv:mark()
    t.write_file(dir .. "/lib/util.lua", "return {\n  name = \n}\n")
    srv:wait_log("reload failed, still serving the previous code: error loading module 'lib%.util' "
                 .. "from file '[^']*': [^ ]*lib/util%.lua:3: unexpected symbol near '}'$", 5, at)
    assert.are.same("v3", get("/version").version)
    at = srv:mark()
    t.write_file(dir .. "/lib/util.lua", "local cfg\nreturn { name = cfg.name }\n")
    srv:wait_log("reload failed, still serving the previous code: [^ ]*lib/util%.lua:2: "
                 .. "attempt to index local 'cfg'", 5, at)
    t.write_file(dir .. "/lib/util.lua", 'return { name = "util3" }\n')
    local deadline = t.now() + 5
    while get("/version").util ~= "util3" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same({ version = "v3", util = "util3" }, get("/version"))
  end)
end)
