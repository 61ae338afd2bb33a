-- `moonlet new NAME`: the project it writes serves and passes its own spec as created,
-- run the way its user runs them (the real binary, from the directory above and inside).
local t = require "moonlet.testing"

describe("moonlet new", function()
  local base, dir

  lazy_setup(function()
    base = t.tmpdir()
    dir = base .. "/myapp"
  end)

  it("creates NAME with an app, its spec and a README", function()
    local r = t.run({ "new", "myapp" }, { cwd = base })
    assert.are.same(0, r.status, r.stderr)
    for _, file in ipairs({ "README.md", "app.lua", "app_spec.lua" }) do
      assert.matches("created myapp/" .. file:gsub("%.", "%%."), r.stdout)
      assert.truthy(t.read_file(dir .. "/" .. file), file)
    end
    assert.matches("moonlet serve myapp %-%-reload", r.stdout)
    local app = t.read_file(dir .. "/app.lua")
    assert.matches('title = "myapp"', app, 1, true)
    assert.matches("pool = true", app, 1, true)
    assert.matches("# myapp", t.read_file(dir .. "/README.md"), 1, true)
    assert.is_nil(t.read_file(dir .. "/README.md"):find("{{name}}", 1, true))
  end)

  it("writes a spec that passes from the directory above and from inside", function()
    local above = t.run({ "test", "myapp" }, { cwd = base, timeout = 30 })
    assert.are.same(0, above.status, above.stdout .. above.stderr)
    assert.matches("\n3 passed, 0 failed\n$", above.stdout)
    for _, argv in ipairs({ { "test", "." }, { "test" } }) do   -- no PATH: no tests/spec here
      local inside = t.run(argv, { cwd = dir, timeout = 30 })
      assert.are.same(0, inside.status, inside.stdout .. inside.stderr)
      assert.matches("\n3 passed, 0 failed\n$", inside.stdout)
    end
  end)

  it("writes an app that serves both of its routes", function()
    local srv = t.server{ app = dir }
    finally(function() srv:stop() end)
    local res = assert(t.request(srv.port, "GET", "/hello/moon?excited=yes"))
    assert.are.same(200, res.status)
    assert.are.same({ message = "hello, moon!" }, res:json())
    res = assert(t.request(srv.port, "GET", "/hello/" .. string.rep("x", 41)))
    assert.are.same(422, res.status)
    res = assert(t.request(srv.port, "GET", "/primes?below=1000"))
    assert.are.same(200, res.status)
    assert.are.same({ below = 1000, primes = 168 }, res:json())
    local curl = t.run({ "-s", srv.url .. "/primes?below=10" }, { bin = "curl" })
    assert.are.same({ below = 10, primes = 4 }, t.json_decode(curl.stdout))
  end)

  it("lists the new app's routes", function()
    local r = t.run({ "routes", "myapp" }, { cwd = base })
    assert.are.same(0, r.status, r.stderr)
    assert.matches("\nGET%s+/hello/{name}%s+loop%s+%-%s+myapp/app%.lua:%d+\n", r.stdout)
    assert.matches("\nGET%s+/primes%s+pool%s+%-%s+myapp/app%.lua:%d+\n", r.stdout)
  end)

  it("refuses a directory that exists and is not empty, and writes nothing", function()
    t.write_file(base .. "/busy/app.lua", "-- mine\n")
    local r = t.run({ "new", "busy" }, { cwd = base })
    assert.are.same(2, r.status)
    assert.are.same("moonlet: new: busy exists and is not empty\n", r.stderr)
    assert.are.same("-- mine\n", t.read_file(base .. "/busy/app.lua"))
    assert.is_nil(t.read_file(base .. "/busy/README.md"))
    t.write_file(base .. "/plain", "")
    r = t.run({ "new", "plain" }, { cwd = base })
    assert.are.same(2, r.status)
    assert.are.same("moonlet: new: plain exists and is not a directory\n", r.stderr)
  end)

  it("fills an empty directory, named after it", function()
    t.write_file(base .. "/empty/x", "")
    os.remove(base .. "/empty/x")
    local r = t.run({ "new", "." }, { cwd = base .. "/empty" })
    assert.are.same(0, r.status, r.stderr)
    assert.matches('title = "empty"', t.read_file(base .. "/empty/app.lua"), 1, true)
  end)

  it("needs exactly one NAME", function()
    for _, argv in ipairs({ { "new" }, { "new", "a", "b" }, { "new", "--bogus" } }) do
      local r = t.run(argv)
      assert.are.same(2, r.status)
      assert.matches("^moonlet: new: expected one NAME", r.stderr)
    end
  end)
end)
