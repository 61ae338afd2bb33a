-- Background tasks started at app load (moonlet.spawn) in every state.
local t = require "moonlet.testing"

describe("background tasks", function()
  it("keep running on the loop and on idle pool threads; pooled work still flows", function()
    local srv = t.server{ app = "tests/apps/background", args = { "--pool-size", "2" } }
    assert.are.same({ where = "pool" },
                    assert(t.request(srv.port, "GET", "/pooled", { timeout = 5 })):json())
    assert.are.same({ v = 42 }, assert(t.request(srv.port, "GET", "/call", { timeout = 5 })):json())
    local before = assert(t.request(srv.port, "GET", "/ticks")):json()
    t.sleep(0.3)   -- every thread idle now
    local after = assert(t.request(srv.port, "GET", "/ticks")):json()
    assert.is_truthy(after.loop > before.loop, "the loop's background task stalled")
    assert.is_truthy(after.pool > before.pool,
                     "the pool threads' background tasks stalled while idle")
    assert.are.same(0, srv:stop())
  end)

  it("do not hold up a graceful shutdown", function()
    local srv = t.server{ app = "tests/apps/background", args = { "--graceful-timeout", "5" } }
    assert.are.same(200, assert(t.request(srv.port, "GET", "/pooled", { timeout = 5 })).status)
    local t0 = t.now()
    srv:signal("TERM")
    assert.are.same(0, srv:wait(10))
    assert.is_truthy(t.now() - t0 < 2, "shutdown took " .. (t.now() - t0) .. " s")
  end)

  it("of replaced code are cancelled once its requests are done (--reload)", function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", t.read_file("tests/apps/background/app.lua"))
    local srv = t.server{ app = dir, args = { "--reload", "--pool-size", "1" } }
    local function rate()
      local a = assert(t.request(srv.port, "GET", "/ticks")):json().loop
      t.sleep(1)
      return assert(t.request(srv.port, "GET", "/ticks")):json().loop - a
    end
    local before = rate()
    t.write_file(dir .. "/app.lua", t.read_file("tests/apps/background/app.lua") .. "\n-- v2\n")
    srv:wait_log("reloaded", 5)
    t.sleep(0.5)   -- the reaper's turn
    local after = rate()
    assert.is_truthy(after < before * 1.5,
                     ("two background tasks tick now: %d before, %d after"):format(before, after))
    assert.are.same(0, srv:stop())
  end)
end)
