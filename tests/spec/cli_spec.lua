-- The CLI: version, help, and every startup failure -> one line on stderr, exit 2.
local t = require "moonlet.testing"

local function startup_error(args, env)
  local r = t.run(args, { timeout = 10, env = env })
  eq(r.status, 2)
  local lines = select(2, r.stderr:gsub("\n", "\n"))
  eq(lines, 1, "expected one line on stderr, got: " .. r.stderr)
  return r.stderr
end

describe("cli", function()
  it("prints the version", function()
    local r = t.run({ "version" }, 5)
    eq(r.status, 0)
    match(r.stdout, "^moonlet %d+%.%d+%.%d+")
  end)

  it("prints help", function()
    local r = t.run({ "--help" }, 5)
    eq(r.status, 0)
    match(r.stdout, "moonlet serve APPDIR")
    match(r.stdout, "%-%-graceful%-timeout")
  end)

  it("rejects an unknown flag", function()
    match(startup_error({ "serve", "apps/hello", "--bogus", "1" }), "unknown option '%-%-bogus'")
  end)

  it("rejects a bad port", function()
    match(startup_error({ "serve", "apps/hello", "--port", "99999" }), "%-%-port")
  end)

  it("rejects a missing APPDIR", function()
    match(startup_error({ "serve" }), "missing APPDIR")
    match(startup_error({ "serve", "no/such/dir" }), "not found: no/such/dir")
  end)

  it("shows a syntax error with file:line", function()
    match(startup_error({ "serve", "tests/apps/syntax_error", "--port", "0" }),
          "tests/apps/syntax_error/app%.lua:%d+:")
  end)

  it("shows a runtime error with file:line", function()
    match(startup_error({ "serve", "tests/apps/runtime_error", "--port", "0" }),
          "tests/apps/runtime_error/app%.lua:4: attempt to index")
  end)

  it("shows a syntax error in a module app.lua requires with its file:line and reason", function()
    match(startup_error({ "serve", "tests/apps/module_error", "--port", "0" }),
          "^moonlet: error loading module 'lib%.syntax' from file '[^']*': "
          .. "tests/apps/module_error/lib/syntax%.lua:4: unexpected symbol near 'end'\n$")
  end)

  it("shows a runtime error in a module app.lua requires with its file:line", function()
    match(startup_error({ "serve", "tests/apps/module_error", "--port", "0" },
                        { MODULE_ERROR = "runtime" }),
          "^moonlet: tests/apps/module_error/lib/runtime%.lua:3: attempt to index local 'cfg'")
  end)

  it("says so when app.lua does not return the app", function()
    match(startup_error({ "serve", "tests/apps/not_an_app", "--port", "0" }),
          "must return the app")
  end)

  it("fails with exit 2 when the port is in use", function()
    local srv = t.server{ app = "apps/hello" }
    match(startup_error({ "serve", "apps/hello", "--port", tostring(srv.port) }),
          "address already in use")
    srv:stop()
  end)

  it("prints the real port for --port 0", function()
    local srv = t.server{ app = "apps/hello" }
    ok(srv.port > 0)
    match(srv:stdout(), "listening on http://127%.0%.0%.1:" .. srv.port)
    eq(assert(t.request(srv.port, "GET", "/hello")).body, '{"message":"hello"}')
    eq(srv:stop(), 0)
  end)
end)
