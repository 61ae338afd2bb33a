-- apps/hello, the first app a newcomer runs, answers what the README shows, whatever the
-- client sends.
local t = require "moonlet.testing"

describe("apps/hello", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "apps/hello" } end)
  lazy_teardown(function() srv:stop() end)

  local function curl(...)
    local out = t.run({ "-s", "-w", " %{http_code}", ... }, { bin = "curl" })
    assert.are.same(0, out.status, out.stderr)
    return out.stdout
  end

  it("/echo answers the body it got, never a status the client picked", function()
    for _, body in ipairs{ "404", "260", "204", '{"a":[1,2]}' } do
      local res = assert(t.request(srv.port, "POST", "/echo", { body = body }))
      assert.are.same(200, res.status, body)
      assert.are.same(body, res.body)
    end
    assert.are.same("404 200", curl("-d", "404", "http://127.0.0.1:" .. srv.port .. "/echo"))
  end)

  it("/items/{id:int} takes the integers a Lua number holds exactly, 404s longer ones", function()
    local cases = {
      { "/items/42", 200, '{"id":42}' },
      { "/items/9007199254740992", 200, '{"id":9007199254740992}' },
      { "/items/-9007199254740992", 200, '{"id":-9007199254740992}' },
      { "/items/9007199254740993", 404, '{"detail":"Not Found"}' },
      { "/items/1000000000000000000", 404, '{"detail":"Not Found"}' },
      { "/items/-123456789012345678", 404, '{"detail":"Not Found"}' },
    }
    for _, c in ipairs(cases) do
      local res = assert(t.request(srv.port, "GET", c[1]))
      assert.are.same(c[2], res.status, c[1])
      assert.are.same(c[3], res.body, c[1])
    end
    assert.are.same('{"detail":"Not Found"} 404',
                    curl("http://127.0.0.1:" .. srv.port .. "/items/1000000000000000000"))
  end)

  it("/sleep refuses an s that is not a number from 0 to 60 with 422, never 500", function()
    for _, s in ipairs{ "nan", "-nan", "inf", "-1", "61", "abc", "", "1e999" } do
      local res = assert(t.request(srv.port, "GET", "/sleep?s=" .. s))
      assert.are.same(422, res.status, s)
      assert.are.same('{"detail":"s must be a number from 0 to 60"}', res.body, s)
    end
    assert.are.same('{"slept":0.01}', assert(t.request(srv.port, "GET", "/sleep?s=0.01")).body)
    assert.are.same("422", curl("http://127.0.0.1:" .. srv.port .. "/sleep?s=nan"):match("%d+$"))
  end)
end)
