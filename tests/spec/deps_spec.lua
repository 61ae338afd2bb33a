-- Dependencies (deps, req.deps, req:dep, app:override), deferred cleanup (req:defer) and
-- background tasks (req:background) through the real binary (tests/apps/deps).
local t = require "moonlet.testing"

describe("dependencies", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/deps" } end)
  lazy_teardown(function() srv:stop() end)

  local function req(method, path, headers)
    return assert(t.request(srv.port, method, path, { headers = headers }))
  end
  local function events(key)
    return req("GET", "/events/" .. key):json().events
  end
  -- waits until the events of key end with `want` (after-work runs after the response)
  local function wait_events(key, want)
    local got
    for _ = 1, 300 do
      got = events(key)
      if got:sub(-#want) == want then return got end
      t.sleep(0.01)
    end
    return got
  end

  it("resolves route, router and app deps into req.deps, each function once", function()
    local res = req("GET", "/r/me", { authorization = "Bearer good", ["x-key"] = "k1" })
    assert.are.same(200, res.status)
    assert.are.same({ user = "ada", greet = "hello, ada", counted = "c" }, res:json())
    -- counted is named by the app, the router and the route: called once
    assert.are.same("counted;begin;greeter-cleanup;commit;",
                    wait_events("k1", "commit;"))
  end)

  it("calls a dependency once when named, asked for by another and by the handler", function()
    for i, path in ipairs({ "/once", "/once/pooled" }) do
      local key = "once" .. i
      local res = req("GET", path, { ["x-key"] = key })
      assert.are.same(200, res.status)
      assert.are.same({ same = true, y = 2 }, res:json())
      assert.are.same("counted;x;", events(key))   -- counted: the app's dep
    end
  end)

  it("answers 500 to a dependency that needs itself", function()
    local mark = srv:mark()
    assert.are.same(500, req("GET", "/cycle", {}).status)
    srv:wait_log("dependency cycle", 5, mark)
  end)

  it("answers a dependency's http_error (401 with its headers) without running the handler",
     function()
    local res = req("GET", "/r/me", { ["x-key"] = "k2" })
    assert.are.same(401, res.status)
    assert.are.same({ detail = "Not authenticated" }, res:json())
    assert.are.same("Bearer", res.headers["www-authenticate"])
  end)

  it("runs deps and their cleanup on a pool thread for a pooled route", function()
    local res = req("GET", "/r/me/pooled", { authorization = "Bearer good", ["x-key"] = "k3" })
    assert.are.same(200, res.status)
    assert.are.same({ user = "ada", greet = "hello, ada", pooled = true }, res:json())
    assert.are.same("counted;begin;greeter-cleanup;commit;", wait_events("k3", "commit;"))
  end)

  it("gives a route without deps of its own the app's", function()
    assert.are.same({ deps = { counted = "c" } }, req("GET", "/nodeps"):json())
  end)

  it("commits in cleanup on success, for both kinds of route", function()
    assert.are.same({ key = "k4" }, req("GET", "/ok", { ["x-key"] = "k4" }):json())
    -- the app's own dependency (counted) runs for every route
    assert.are.same("counted;begin;commit;", wait_events("k4", "commit;"))
    assert.are.same({ key = "k5" }, req("GET", "/ok/pooled", { ["x-key"] = "k5" }):json())
    assert.are.same("counted;begin;commit;", wait_events("k5", "commit;"))
  end)

  it("gives cleanup the error when the handler fails (500), for both kinds of route", function()
    assert.are.same(500, req("GET", "/fail", { ["x-key"] = "k6" }).status)
    assert.matches("^counted;begin;rollback:.*app.lua:%d+: boom;$", wait_events("k6", ";"))
    assert.are.same(500, req("GET", "/fail/pooled", { ["x-key"] = "k7" }).status)
    assert.matches("^counted;begin;rollback:.*app.lua:%d+: boom;$", wait_events("k7", ";"))
  end)

  it("gives cleanup the http_error a handler raised", function()
    local res = req("GET", "/http_error", { ["x-key"] = "k8" })
    assert.are.same(409, res.status)
    assert.are.same("counted;begin;rollback:HTTP 409: conflict;", wait_events("k8", ";"))
  end)

  it("runs cleanup when the client leaves while the handler waits", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /slow HTTP/1.1\r\nHost: x\r\nX-Key: k9\r\n\r\n"))
    for _ = 1, 300 do
      if events("k9") ~= "" then break end
      t.sleep(0.01)
    end
    c:close()
    assert.are.same("counted;begin;rollback:client disconnected;",
                    wait_events("k9", "disconnected;"))
  end)

  it("runs deferred functions after the response has been sent", function()
    for _, path in ipairs{ "/after/a1", "/after/a2/pooled" } do
      local key = path:match("/after/(%w+)")
      -- the cleanup waits for /release: had it run before the response, this would hang
      assert.are.same("sent", req("GET", path).body)
      assert.are.same("", events(key))
      assert.are.same(200, req("POST", "/release/" .. key).status)
      assert.are.same("deferred-after-release;", wait_events(key, "release;"))
    end
  end)

  it("runs req:defer(fn, \"handler\") before the response, for both kinds of route", function()
    for i, path in ipairs{ "/now", "/now/pooled" } do
      local key = "n" .. i
      local res = req("GET", path, { ["x-key"] = key })
      assert.are.same(200, res.status)
      assert.are.same("counted;", res:json().events)   -- what the handler saw
      -- read as soon as the response is in: the "handler" cleanup has run already
      assert.matches("^counted;committed%-before%-response;", events(key))
      assert.are.same("counted;committed-before-response;after-response;",
                      wait_events(key, "after-response;"))
    end
    -- a failing handler: its "handler" cleanup gets the error, before the 500
    assert.are.same(500, req("GET", "/now", { ["x-key"] = "n3", ["x-fail"] = "1" }).status)
    assert.are.same("counted;rolled-back-before-response;after-response;",
                    wait_events("n3", "after-response;"))
  end)

  it("answers 500 when a \"handler\" cleanup fails (the commit did not happen)", function()
    local res = req("GET", "/now", { ["x-key"] = "n4", ["x-commit-fails"] = "1" })
    assert.are.same(500, res.status)
    assert.truthy(srv:wait_log("GET /now: .*commit failed", 5))
    assert.are.same("counted;after-response;", wait_events("n4", "after-response;"))
  end)

  it("runs a \"handler\" cleanup when the client leaves during the handler", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /now/slow HTTP/1.1\r\nHost: x\r\nX-Key: n5\r\n\r\n"))
    for _ = 1, 300 do
      if events("n5") ~= "" then break end
      t.sleep(0.01)
    end
    c:close()
    assert.are.same("counted;after-response;rolled-back-before-response;",
                    wait_events("n5", "response;"))
  end)

  it("refuses an unknown when", function()
    assert.are.same(500, req("GET", "/now/bad").status)
    assert.truthy(srv:wait_log("bad argument #2 to 'defer'", 5))
  end)

  it("runs background tasks after cleanup, in order, on the loop and on the pool", function()
    local res = req("POST", "/bg/b1")
    assert.are.same(202, res.status)
    assert.are.same("deferred;bg1;bg-pool:true;", wait_events("b1", "bg-pool:true;"))
    assert.truthy(srv:wait_log("background task failed: .*bg failed", 5))
    res = req("POST", "/bg/b2/pooled")
    assert.are.same(202, res.status)
    assert.are.same("bg:true;", wait_events("b2", "bg:true;"))
  end)

  it("does not run background tasks when the handler fails", function()
    assert.are.same(400, req("POST", "/bg/b3/fails").status)
    assert.are.same(200, req("POST", "/bg/b4").status == 202 and 200 or 0)
    wait_events("b4", "bg-pool:true;")   -- a later request's tasks have run by now
    assert.are.same("", events("b3"))
  end)
end)

describe("app:override", function()
  it("swaps a dependency wherever it is used", function()
    local srv = t.server{ app = "tests/apps/deps", env = { DEPS_OVERRIDE = "1" } }
    local res = assert(t.request(srv.port, "GET", "/r/me", { headers = { ["x-key"] = "o1" } }))
    srv:stop()
    assert.are.same(200, res.status)
    assert.are.same({ user = "test-user", greet = "hello, test-user", counted = "c" }, res:json())
  end)
end)

describe("deps options", function()
  for _, case in ipairs{
    { "route", "route /x: deps must map names to functions (deps.a is a number)" },
    { "app", "app: deps must be a table of name = function" },
    { "router", "router: deps must map names to functions" },
    { "tags", "tags must be a list of strings" },
  } do
    it("refuses to load with a clear error: " .. case[1], function()
      local r = t.run({ "serve", "tests/apps/deps", "--port", "0" },
                      { env = { DEPS_BAD = case[1] }, timeout = 10 })
      assert.are.same(2, r.status)
      assert.matches(case[2], r.stderr, 1, true)
    end)
  end
end)
