-- gather, spawn, timeout: structured concurrency on the loop, with cancellation.
local t = require "moonlet.testing"

describe("gather / spawn / timeout", function()
  local srv
  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  lazy_setup(function() srv = t.server{ app = "tests/apps/basic" } end)
  lazy_teardown(function() srv:stop() end)

  it("moonlet.cond wakes its waiters with the notifier's value", function()
    assert.are.same({ a = "hi", b = 1, order = { "notify", "a" } }, get("/cond/gather"):json())
    -- two requests wait; a third wakes one, a fourth the other
    local c1, c2 = assert(t.connect(srv.port)), assert(t.connect(srv.port))
    assert(c1:send("GET /cond/wait HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert(c2:send("GET /cond/wait HTTP/1.1\r\nHost: x\r\n\r\n"))
    for _ = 1, 200 do
      if get("/cond/waiting"):json().n == 2 then break end
      t.sleep(0.01)
    end
    assert.are.same(2, get("/cond/waiting"):json().n)
    local res = assert(t.request(srv.port, "POST", "/cond/notify?one=1", { body = "first" }))
    assert.are.same({ woken = 1 }, res:json())
    assert.are.same({ got = "first" }, assert(c1:read_response()):json())
    res = assert(t.request(srv.port, "POST", "/cond/notify", { body = "rest" }))
    assert.are.same({ woken = 1 }, res:json())
    assert.are.same({ got = "rest" }, assert(c2:read_response()):json())
    c1:close()
    c2:close()
    assert.are.same({ woken = 0 }, assert(t.request(srv.port, "POST", "/cond/notify")):json())
  end)

  it("moonlet.cond: a wait cut by a timeout or a client leaving waits no more", function()
    assert.are.same({ err = "timeout", waiting = 0 }, get("/cond/timeout"):json())
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /cond/wait HTTP/1.1\r\nHost: x\r\n\r\n"))
    for _ = 1, 200 do
      if get("/cond/waiting"):json().n == 1 then break end
      t.sleep(0.01)
    end
    c:close()
    local n
    for _ = 1, 200 do
      n = get("/cond/waiting"):json().n
      if n == 0 then break end
      t.sleep(0.01)
    end
    assert.are.same(0, n)
  end)

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
