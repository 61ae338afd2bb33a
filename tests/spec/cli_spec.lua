-- The CLI: version, help, and every startup failure -> one line on stderr, exit 2.
local t = require "moonlet.testing"

local function startup_error(args, env)
  local r = t.run(args, { timeout = 10, env = env })
  assert.are.same(2, r.status)
  local lines = select(2, r.stderr:gsub("\n", "\n"))
  assert.are.same(1, lines, "expected one line on stderr, got: " .. r.stderr)
  return r.stderr
end

describe("cli", function()
  it("prints the version", function()
    local r = t.run({ "version" }, 5)
    assert.are.same(0, r.status)
    assert.matches("^moonlet %d+%.%d+%.%d+", r.stdout)
  end)

  it("prints help", function()
    local r = t.run({ "--help" }, 5)
    assert.are.same(0, r.status)
    assert.matches("moonlet serve APPDIR", r.stdout)
    assert.matches("%-%-graceful%-timeout", r.stdout)
  end)

  it("rejects an unknown flag", function()
    assert.matches("unknown option '%-%-bogus'",
                   (startup_error({ "serve", "apps/hello", "--bogus", "1" })))
  end)

  it("rejects a bad port", function()
    assert.matches("%-%-port", (startup_error({ "serve", "apps/hello", "--port", "99999" })))
  end)

  it("rejects a missing APPDIR", function()
    assert.matches("missing APPDIR", (startup_error({ "serve" })))
    assert.matches("not found: no/such/dir", (startup_error({ "serve", "no/such/dir" })))
  end)

  it("shows a syntax error with file:line", function()
    assert.matches("tests/apps/syntax_error/app%.lua:%d+:",
                   (startup_error({ "serve", "tests/apps/syntax_error", "--port", "0" })))
  end)

  it("shows a runtime error with file:line", function()
    assert.matches("tests/apps/runtime_error/app%.lua:4: attempt to index",
                   (startup_error({ "serve", "tests/apps/runtime_error", "--port", "0" })))
  end)

  it("shows a syntax error in a module app.lua requires with its file:line and reason", function()
    assert.matches("^moonlet: error loading module 'lib%.syntax' from file '[^']*': "
          .. "tests/apps/module_error/lib/syntax%.lua:4: unexpected symbol near 'end'\n$", (startup_error({ "serve", "tests/apps/module_error", "--port", "0" })))
  end)

  it("shows a runtime error in a module app.lua requires with its file:line", function()
    assert.matches("^moonlet: tests/apps/module_error/lib/runtime%.lua:3: attempt to index local 'cfg'", (startup_error({ "serve", "tests/apps/module_error", "--port", "0" },
                        { MODULE_ERROR = "runtime" })))
  end)

  it("says so when app.lua does not return the app", function()
    assert.matches("must return the app",
                   (startup_error({ "serve", "tests/apps/not_an_app", "--port", "0" })))
  end)

  it("fails with exit 2 when the port is in use", function()
    local srv = t.server{ app = "apps/hello" }
    assert.matches("address already in use",
                   (startup_error({ "serve", "apps/hello", "--port", tostring(srv.port) })))
    srv:stop()
  end)

  it("prints the real port for --port 0", function()
    local srv = t.server{ app = "apps/hello" }
    assert.is_truthy(srv.port > 0)
    assert.matches("listening on http://127%.0%.0%.1:" .. srv.port, (srv:stdout()))
    assert.are.same('{"message":"hello"}', assert(t.request(srv.port, "GET", "/hello")).body)
    assert.are.same(0, srv:stop())
  end)
end)
