-- `moonlet routes APPDIR`: the route table of the test apps that have every kind of route
-- (routers with prefixes, dependencies, WebSocket, static files, pooled routes,
-- middleware), and the load errors, as `moonlet serve` reports them.
local t = require "moonlet.testing"

-- stdout's table, each line split into its cells (two spaces or more apart)
local function table_of(app, env)
  local r = t.run({ "routes", app }, { env = env })
  assert.are.same(0, r.status, r.stderr)
  assert.are.same("", r.stderr)
  local rows = {}
  for line in r.stdout:gmatch("([^\n]*)\n") do
    if line == "" then break end   -- the table ends at the first empty line
    local cells = {}
    for cell in (line .. "  "):gmatch("(.-)   *") do cells[#cells + 1] = cell end
    rows[#rows + 1] = cells
  end
  return rows, r.stdout
end

local BUILTIN = {
  { "GET", "/openapi.json", "loop", "-", "(moonlet: OpenAPI document)" },
  { "GET", "/docs", "loop", "-", "(moonlet: docs page)" },
  { "GET", "/docs/app.js", "loop", "-", "(moonlet: docs page)" },
  { "GET", "/docs/app.css", "loop", "-", "(moonlet: docs page)" },
}

-- the rows, then the built-in routes
local function with_builtin(rows)
  for _, row in ipairs(BUILTIN) do rows[#rows + 1] = row end
  return rows
end

describe("moonlet routes", function()
  it("prints routers' routes under their prefixes, in the order registered, aligned", function()
    local rows, out = table_of("tests/apps/routers")
    local f = "tests/apps/routers/app.lua:"
    assert.are.same(with_builtin({
      { "METHOD", "PATH", "MODE", "DEPS", "HANDLER" },
      { "GET", "/users", "loop", "-", f .. "8" },
      { "GET", "/users/", "loop", "-", f .. "9" },
      { "GET", "/users/{id:int}", "loop", "-", f .. "10" },
      { "POST", "/users/{id:int}", "pool", "-", f .. "11" },
      { "GET", "/users/keys/{name}", "loop", "-", f .. "16" },
      { "GET", "/plain", "loop", "-", f .. "20" },
      { "GET", "/out/in/t", "loop", "-", f .. "38" },
      { "GET", "/out/u", "loop", "-", f .. "41" },
      { "GET", "/tags", "loop", "-", f .. "43" },
    }), rows)
    -- every column starts where its heading does
    local header = out:match("^[^\n]*")
    for line in out:gmatch("[^\n]+") do
      for _, col in ipairs({ "PATH", "MODE", "DEPS", "HANDLER" }) do
        local at = header:find(col, 1, true)
        assert.are.same("  ", line:sub(at - 2, at - 1), line)
        assert.are_not.same(" ", line:sub(at, at), line)
      end
    end
  end)

  it("names each route's dependencies: the app's, its router's and its own", function()
    local rows = table_of("tests/apps/deps")
    assert.are.same({ "GET", "/r/me", "loop", "counted,greet,user", "tests/apps/deps/app.lua:49" },
                    rows[2])
    assert.are.same({ "GET", "/r/me/pooled", "pool", "counted,greet,user",
                      "tests/apps/deps/app.lua:52" }, rows[3])
    assert.are.same({ "GET", "/fail", "loop", "counted,db", "tests/apps/deps/app.lua:57" },
                    rows[4])
  end)

  it("marks WebSocket routes", function()
    local rows = table_of("tests/apps/websocket")
    local f = "tests/apps/websocket/app.lua:"
    assert.are.same({ "GET", "/echo", "websocket", "-", f .. "7" }, rows[2])
    assert.are.same({ "GET", "/rooms/{room:int}", "websocket", "user", f .. "33" }, rows[3])
    assert.are.same({ "GET", "/private", "websocket", "auth", f .. "44" }, rows[4])
    local last = rows[#rows - #BUILTIN]
    assert.are.same("loop", last[3])
  end)

  it("lists static mounts with their directories, and the middleware", function()
    local rows, out = table_of("tests/apps/static")
    assert.are.same(with_builtin({
      { "METHOD", "PATH", "MODE", "DEPS", "HANDLER" },
      { "GET", "/static/api", "loop", "-", "tests/apps/static/app.lua:24" },
      { "GET", "/hello", "loop", "-", "tests/apps/static/app.lua:25" },
      { "GET,HEAD", "/static/{path:path}", "static", "-", "tests/apps/static/public" },
      { "GET,HEAD", "/plain/{path:path}", "static", "-", "tests/apps/static/public" },
    }), rows)
    assert.matches("\n\nmiddleware, outermost first %(not for websocket routes and static "
                   .. "files%):\n  tests/apps/static/app%.lua:6\n$", out)
    -- an absolute directory stays as given
    local extra = t.tmpdir()
    rows = table_of("tests/apps/static", { STATIC_EXTRA = extra })
    assert.are.same({ "GET,HEAD", "/extra/{path:path}", "static", "-", extra }, rows[6])
  end)

  it("marks pooled routes, behind middleware too", function()
    local rows, out = table_of("tests/apps/middleware")
    assert.are.same({ "GET", "/pooled", "pool", "-", "tests/apps/middleware/app.lua:58" },
                    rows[8])
    assert.matches("\nmiddleware, outermost first", out)
    rows, out = table_of("tests/apps/pool")
    assert.are.same({ "GET", "/p/{id:int}", "pool", "-", "tests/apps/pool/app.lua:7" }, rows[2])
    assert.is_nil(out:find("middleware", 1, true))
  end)

  it("says why an app does not load, in one line as serve does, exit 2", function()
    for _, case in ipairs({
      { "tests/apps/syntax_error" },
      { "tests/apps/runtime_error" },
      { "tests/apps/module_error" },
      { "tests/apps/module_error", { MODULE_ERROR = "runtime" } },
      { "tests/apps/routers", { ROUTERS_BAD = "prefix" } },
    }) do
      local r = t.run({ "routes", case[1] }, { env = case[2] })
      local s = t.run({ "serve", case[1], "--port", "0" }, { env = case[2] })
      assert.are.same(2, r.status)
      assert.are.same("", r.stdout)
      assert.are.same(s.stderr, r.stderr)
    end
    local r = t.run({ "routes", "tests/apps/not_an_app" })
    assert.are.same(2, r.status)
    assert.are.same("moonlet: tests/apps/not_an_app/app.lua must return the app "
                    .. "(return moonlet.app{...}), got nil\n", r.stderr)
    r = t.run({ "routes", "no/such/dir" })
    assert.are.same(2, r.status)
    assert.matches("^moonlet: cannot open no/such/dir/app%.lua", r.stderr)
    r = t.run({ "routes" })
    assert.are.same(2, r.status)
    assert.are.same("moonlet: routes: expected one APPDIR (moonlet routes APPDIR)\n", r.stderr)
  end)

  it("is in the help, with moonlet new", function()
    local r = t.run({ "--help" })
    assert.matches("moonlet new NAME", r.stdout, 1, true)
    assert.matches("moonlet routes APPDIR", r.stdout, 1, true)
  end)
end)
