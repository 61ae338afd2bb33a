-- The db:begin() checks both db specs run (SQLite and PostgreSQL) against tests/apps/db's
-- /begin routes, on the loop and on a pool thread. Returns function(port).
local t = require "moonlet.testing"
local assert = require "luassert"   -- a required module sees _G, not the spec's env

return function(port)
  for _, prefix in ipairs{ "", "/pool" } do
    local r = assert(t.request(port, "GET", prefix .. "/begin?name=b1" .. prefix)):json()
    assert.are.same(true, r.ok)
    assert.are.same(1, r.after)
    assert.matches("this transaction is finished", r.again)
    assert.matches("inside db:transaction: return to commit", r.nested)
    r = assert(t.request(port, "GET", prefix .. "/begin?mode=rollback&name=b2" .. prefix))
    assert.are.same(0, r:json().after)
    r = assert(t.request(port, "GET", prefix .. "/begin?mode=drop&name=b3" .. prefix))
    assert.are.same(1, r:json().after)   -- the dropped one was rolled back
  end
end
