-- {{name}}'s spec, run by `moonlet test .` here (or `moonlet test {{name}}` from the
-- directory above). The in-process test client runs the app: no port, no server to start.
local t = require "moonlet.testing"

-- the app's directory: this file's, wherever `moonlet test` was started
local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

describe("{{name}}", function()
  local client
  before_each(function() client = t.client(dir) end)
  after_each(function() client:close() end)

  it("greets by name", function()
    local res = client:get("/hello/moon", { query = { excited = "yes" } })
    assert.are.same(200, res.status)
    assert.are.same({ message = "hello, moon!" }, res:json())
  end)

  it("refuses a name longer than 40 characters", function()
    local res = client:get("/hello/" .. string.rep("x", 41))
    assert.are.same(422, res.status)
    assert.are.same("string_too_long", res:json().detail[1].type)
  end)

  it("counts primes on a pool thread", function()
    local res = client:get("/primes", { query = { below = 100 } })
    assert.are.same(200, res.status)
    assert.are.same({ below = 100, primes = 25 }, res:json())
  end)
end)
