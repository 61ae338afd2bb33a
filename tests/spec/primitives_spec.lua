-- gather, spawn, timeout: structured concurrency on the loop, with cancellation.
local t = require "moonlet.testing"

describe("gather / spawn / timeout", function()
  local srv
  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  before_all(function() srv = t.server{ app = "tests/apps/basic" } end)
  after_all(function() srv:stop() end)

  it("gather runs functions concurrently and returns results in order", function()
    local r = get("/gather"):json()
    eq(r.a, 1)
    eq(r.b, "two")
    eq(r.c, true)
    -- three 0.3 s sleeps: 0.9 s one after another
    ok(r.elapsed < 0.75, "gathered sleeps ran one after another: " .. r.elapsed)
  end)

  it("gather returns the first result of each function, nil for one that returned nil, err", function()
    eq(get("/gather-first"):json(), { a = "a", b = true, c = "c", d = true })
  end)

  it("gather raises the first error and cancels the others", function()
    eq(get("/gather-error").status, 500)
    srv:wait_log("gather failure", 5)
    t.sleep(0.5)
    eq(get("/flag?k=gather_sibling_ran"):json(), {})
    eq(get("/gather-http-error").status, 409)
  end)

  it("gather with return_errors returns errors in place", function()
    local r = get("/gather-errors"):json()
    eq(r.is_error, true)
    match(r.msg, "first fails")
    eq(r.second, 2)
    eq(r.plain, false)
  end)

  it("nests", function()
    eq(get("/nested-gather"):json(), { x = 10, y = 20 })
  end)

  it("cancels gathered tasks when the client disconnects", function()
    local c = t.connect(srv.port)
    c:send("GET /gather-slow?tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    c:close()
    t.sleep(0.5)
    eq(get("/flag?k=slow1:gone"):json(), {})
    eq(get("/flag?k=slow2:gone"):json(), {})
    eq(get("/gather-slow?tag=kept"):json(), { done = true })
    eq(get("/flag?k=slow1:kept"):json(), { v = true })
  end)

  it("timeout returns results in time, nil and 'timeout' after cancelling", function()
    eq(get("/timeout?s=0.01"):json(), { v = "done" })
    eq(get("/timeout?s=0.3"):json(), { err = "timeout" })
    t.sleep(0.4)
    eq(get("/flag?k=timeout_finished:0.3"):json(), {})
    eq(get("/timeout-error").status, 500)
    srv:wait_log("inside timeout", 5)
  end)

  it("spawn runs detached after the response", function()
    eq(get("/spawn?k=bg1"):json(), { spawned = true })
    eq(get("/flag?k=bg1"):json(), {})
    t.sleep(0.3)
    eq(get("/flag?k=bg1"):json(), { v = true })
  end)

  it("logs a spawned task's error with its traceback", function()
    eq(get("/spawn-error"):json(), { spawned = true })
    srv:wait_log("spawned task failed: .*background boom", 5)
  end)
end)
