-- moonlet.db/http/redis/jobs/middleware load at first use (init.lua's __index). The field
-- must stay the module require gives: a spec's insulate block (busted clears the
-- package.loaded entries made inside it) must not leave moonlet.X a stale second instance.
local moonlet = require "moonlet"

describe("moonlet's lazily loaded modules", function()
  insulate("first used inside an insulate block", function()
    it("load there", function()
      assert.is_table(moonlet.redis)
      assert.is_table(moonlet.jobs)
    end)
  end)

  it("are still the instance require returns after the block", function()
    assert.are.equal(require "moonlet.redis", moonlet.redis)
    assert.are.equal(require "moonlet.jobs", moonlet.jobs)
  end)
end)

describe("a pool thread's Lua state", function()
  it("loads none of moonlet's optional modules its app does not use", function()
    local t = require "moonlet.testing"
    local srv = t.server{ app = "tests/apps/basic", args = { "--log-level", "warn" } }
    local res = assert(t.request(srv.port, "GET", "/pool-modules"))
    srv:stop()
    assert.are.same(200, res.status, res.body)
    assert.are.same(0, res:json().n, res.body)
  end)
end)
