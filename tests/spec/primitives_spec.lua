-- gather, spawn, timeout: structured concurrency on the loop, with cancellation.
local t = require "moonlet.testing"

describe("gather / spawn / timeout", function()
  local srv
  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  lazy_setup(function() srv = t.server{ app = "tests/apps/basic" } end)
  lazy_teardown(function() srv:stop() end)

  it("gather runs functions concurrently and returns results in order", function()
    local r = get("/gather"):json()
    assert.are.same(1, r.a)
    assert.are.same("two", r.b)
    assert.are.same(true, r.c)
    -- three 0.3 s sleeps: 0.9 s one after another
    assert.is_truthy(r.elapsed < 0.75, "gathered sleeps ran one after another: " .. r.elapsed)
  end)

  it("gather returns the first result of each function, nil for one that returned nil, err", function()
    assert.are.same({ a = "a", b = true, c = "c", d = true }, get("/gather-first"):json())
  end)

  it("gather raises the first error and cancels the others", function()
    assert.are.same(500, get("/gather-error").status)
    srv:wait_log("gather failure", 5)
    t.sleep(0.5)
    assert.are.same({}, get("/flag?k=gather_sibling_ran"):json())
    assert.are.same(409, get("/gather-http-error").status)
  end)

  it("gather with return_errors returns errors in place", function()
    local r = get("/gather-errors"):json()
    assert.are.same(true, r.is_error)
    assert.matches("first fails", r.msg)
    assert.are.same(2, r.second)
    assert.are.same(false, r.plain)
  end)

  it("nests", function()
    assert.are.same({ x = 10, y = 20 }, get("/nested-gather"):json())
  end)

  it("cancels gathered tasks when the client disconnects", function()
    local c = t.connect(srv.port)
    c:send("GET /gather-slow?tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    c:close()
    t.sleep(0.5)
    assert.are.same({}, get("/flag?k=slow1:gone"):json())
    assert.are.same({}, get("/flag?k=slow2:gone"):json())
    assert.are.same({ done = true }, get("/gather-slow?tag=kept"):json())
    assert.are.same({ v = true }, get("/flag?k=slow1:kept"):json())
  end)

  it("timeout returns results in time, nil and 'timeout' after cancelling", function()
    assert.are.same({ v = "done" }, get("/timeout?s=0.01"):json())
    assert.are.same({ err = "timeout" }, get("/timeout?s=0.3"):json())
    t.sleep(0.4)
    assert.are.same({}, get("/flag?k=timeout_finished:0.3"):json())
    assert.are.same(500, get("/timeout-error").status)
    srv:wait_log("inside timeout", 5)
  end)

  it("spawn runs detached after the response", function()
    assert.are.same({ spawned = true }, get("/spawn?k=bg1"):json())
    assert.are.same({}, get("/flag?k=bg1"):json())
    t.sleep(0.3)
    assert.are.same({ v = true }, get("/flag?k=bg1"):json())
  end)

  it("logs a spawned task's error with its traceback", function()
    assert.are.same({ spawned = true }, get("/spawn-error"):json())
    srv:wait_log("spawned task failed: .*background boom", 5)
  end)
end)
