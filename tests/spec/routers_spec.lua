-- moonlet.router and app:include through the real binary (tests/apps/routers).
local t = require "moonlet.testing"

describe("routers", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/routers" } end)
  lazy_teardown(function() srv:stop() end)

  local function get(path) return assert(t.request(srv.port, "GET", path)) end

  it("serves a router's routes under its prefix", function()
    assert.are.same({ list = true }, get("/users"):json())
    assert.are.same({ slash = true }, get("/users/"):json())
    assert.are.same({ user = 7 }, get("/users/7"):json())
    assert.are.same(404, get("/users/x").status)
    assert.are.same(404, get("/7").status)
  end)

  it("runs a pooled route of a router on a pool thread", function()
    local res = assert(t.request(srv.port, "POST", "/users/8"))
    assert.are.same(201, res.status)
    assert.are.same({ user = 8, pooled = true }, res:json())
  end)

  it("nests routers: prefixes add up", function()
    assert.are.same({ key = "a b", path = "/users/keys/a b" }, get("/users/keys/a%20b"):json())
  end)

  it("includes a router without a prefix as it is", function()
    assert.are.same("plain", get("/plain").body)
  end)

  it("gives routes their routers' tags, outermost first, then their own", function()
    assert.are.same({ ["/out/in/t"] = { "outer", "inner", "route" }, ["/out/u"] = { "outer" } },
                    get("/tags"):json())
    assert.are.same("t", get("/out/in/t").body)
  end)

  it("copies the routes at include time", function()
    assert.are.same(404, get("/users/late").status)
  end)

  it("405s a method the router's path does not have, with Allow", function()
    local res = assert(t.request(srv.port, "DELETE", "/users/7"))
    assert.are.same(405, res.status)
    assert.are.same("GET, HEAD, POST", res.headers["allow"])
  end)

  for _, case in ipairs{
    { "prefix", "a prefix starts with '/' and does not end with one" },
    { "option", "unknown option 'tagz'; accepted: prefix" },
    { "empty", "needs a router with a prefix" },
    { "twice", "defined twice" },
    { "not_router", "expected a moonlet.router" },
  } do
    it("refuses to load with a clear error: " .. case[1], function()
      local r = t.run({ "serve", "tests/apps/routers", "--port", "0" },
                      { env = { ROUTERS_BAD = case[1] }, timeout = 10 })
      assert.are.same(2, r.status)
      assert.matches(case[2], r.stderr, 1, true)
    end)
  end
end)
