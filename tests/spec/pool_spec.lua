-- Pooled routes (FastAPI's def), run_in_pool, shared dictionaries, the watchdog.
local t = require "moonlet.testing"

describe("pooled routes", function()
  local srv
  local function get(path, opts) return assert(t.request(srv.port, "GET", path, opts)) end
  lazy_setup(function() srv = t.server{ app = "tests/apps/pool", args = { "--pool-size", "4" } } end)
  lazy_teardown(function() srv:stop() end)

  it("run on a pool thread with params, query and headers copied over", function()
    local res = get("/p/7?q=a%20b&tag=x&tag=y", { headers = { ["X-H"] = "hv" } })
    assert.are.same(200, res.status)
    assert.are.same({ id = 7, q = "a b", tags = { "x", "y" }, h = "hv", in_pool = true,
                     method = "GET", path = "/p/7" }, res:json())
    assert.are.same({ name = "a/b" }, get("/p/name/a%2Fb"):json())
  end)

  it("take bodies and return status and headers", function()
    local res = assert(t.request(srv.port, "POST", "/p/echo", { body = '{"a":[1,2],"b":"c"}' }))
    assert.are.same(201, res.status)
    assert.are.same("yes", res.headers["x-pool"])
    assert.are.same({ a = { 1, 2 }, b = "c" }, res:json())
    assert.are.same("from the pool", get("/p/text").body)
  end)

  it("find a route whose pattern is longer than 255 bytes", function()
    local res = get("/p/long/" .. string.rep("x", 300) .. "/5")
    assert.are.same(200, res.status)
    assert.are.same({ id = 5 }, res:json())
  end)

  it("answer 500 on an error, log the traceback, and the thread stays usable", function()
    for _ = 1, 6 do assert.are.same(500, get("/p/error").status) end
    srv:wait_log("GET /p/error: .*pool boom", 5)
    srv:wait_log("stack traceback", 5)
    assert.are.same(200, get("/p/1").status)
    local res = get("/p/http-error")
    assert.are.same(409, res.status)
    assert.are.same({ detail = "conflict in pool" }, res:json())
  end)

  it("block their own thread in moonlet.sleep, not the loop", function()
    local c = t.connect(srv.port)
    c:send("GET /p/sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = t.now()
    assert.are.same(200, get("/p/1").status)
    assert.is_truthy(t.now() - t0 < 0.8, "the loop waited for a pool thread")
    assert.are.same({ slept = 1 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("sleep the full time on a thread that was idle for a while", function()
    t.sleep(0.4)   -- the thread's private loop stood still meanwhile
    local t0 = t.now()
    assert.are.same({ slept = 0.3 }, get("/p/sleep?s=0.3"):json())
    assert.is_truthy(t.now() - t0 >= 0.29,
                     "a pooled moonlet.sleep(0.3) returned after " .. (t.now() - t0))
  end)

  it("run in parallel up to the pool size", function()
    local r = t.concurrent(srv.port, 4, "GET /p/sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n", 10)
    assert.are.same(4, r.ok)
    assert.is_truthy(r.elapsed < 1.5, "4 pooled sleeps on 4 threads took " .. r.elapsed .. " s")
  end)

  it("can gather and call run_in_pool on the pool thread itself", function()
    assert.are.same({ a = 1, b = 2 }, get("/p/gather"):json())
    assert.are.same({ a = "a", b = true }, get("/p/gather-first"):json())
    assert.are.same({ v = 15 }, get("/p/nested"):json())
  end)
end)

describe("run_in_pool", function()
  local srv
  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  lazy_setup(function() srv = t.server{ app = "tests/apps/pool", args = { "--pool-size", "2" } } end)
  lazy_teardown(function() srv:stop() end)

  it("ships a function and copies arguments and results", function()
    assert.are.same({ sum = 42, t = { sum = 42, list = { 2, 40 } } },
                    get("/rip/add?a=2&b=40"):json())
  end)

  it("resolves \"module.function\" in the pool state", function()
    assert.are.same({ v = 42 }, get("/rip/module"):json())
    local r = get("/rip/missing"):json()
    assert.are.same(false, r.ok)
    assert.matches("helpers%.nope is not a function", r.err)
  end)

  it("copies nested tables, empty arrays and null faithfully", function()
    local body = get("/rip/roundtrip").body
    assert.matches('"list":%[%]', body)
    assert.matches('"n":null', body)
    assert.matches('"nested":%[%[1,"two",true,false%]%]', body)
    assert.matches('"7":"seven"', body)
    assert.matches('"f":1%.5', body)
  end)

  it("brings an error back with its message and the pool's traceback", function()
    local r = get("/rip/error"):json()
    assert.are.same(false, r.ok)
    assert.matches("deep failure", r.err)
    assert.matches("stack traceback", r.err)
    assert.are.same(500, get("/rip/raise").status)
    srv:wait_log("unhandled pool failure", 5)
  end)

  it("refuses upvalues, functions and cycles with clear errors", function()
    local r = get("/rip/upvalue"):json()
    assert.are.same(false, r.ok)
    assert.matches("upvalue 'x'", r.err)
    r = get("/rip/bad-arg"):json()
    assert.are.same(false, r.ok)
    assert.matches("cannot copy a function", r.err)
    assert.are.same(false, r.ok2)
    assert.matches("nested deeper", r.err2)
    assert.are.same(false, r.ok3)
    assert.matches("result .*cannot copy a function", r.err3)
  end)
end)

describe("backpressure", function()
  -- one job runs, one waits, the third finds the queue full
  for _, case in ipairs{ { "a pooled route", "/p/sleep" }, { "run_in_pool", "/rip/sleep" } } do
    local what, path = case[1], case[2]
    it("answers 503 with Retry-After when the queue is full: " .. what, function()
      local srv = t.server{ app = "tests/apps/pool", args = { "--pool-size", "1",
                            "--executor-size", "1", "--pool-queue", "1" } }
      -- c1's job runs (its thread started and took it: slow under TSan), then c2's is queued
      local function ran(tag)
        return assert(t.request(srv.port, "GET", "/shared/get?k=ran:" .. tag)):json().v
      end
      local c1 = t.connect(srv.port)
      c1:send("GET " .. path .. "?s=1&tag=c1 HTTP/1.1\r\nHost: x\r\n\r\n")
      local deadline = os.time() + 10
      while ran("c1") ~= 1 and os.time() < deadline do t.sleep(0.02) end
      assert.are.same(1, ran("c1"))
      local c2 = t.connect(srv.port)
      c2:send("GET " .. path .. "?s=0.1&tag=c2 HTTP/1.1\r\nHost: x\r\n\r\n")
      t.sleep(0.2)
      local res = assert(t.request(srv.port, "GET", path .. "?s=0.1"))
      assert.are.same(503, res.status)
      assert.are.same("1", res.headers["retry-after"])
      assert.are.same({ detail = "Service Unavailable" }, res:json())
      assert.are.same(200, assert(c1:read_response(5)).status)
      assert.are.same(200, assert(c2:read_response(5)).status)
      srv:stop()
    end)
  end

  it("drops a queued job whose client disconnected", function()
    local srv = t.server{ app = "tests/apps/pool", args = { "--pool-size", "1" } }
    local c1 = t.connect(srv.port)
    c1:send("GET /p/sleep?s=0.5&tag=first HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    local c2 = t.connect(srv.port)
    c2:send("GET /p/sleep?s=0.1&tag=gone HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    c2:close()
    assert.are.same(200, assert(c1:read_response(5)).status)
    t.sleep(0.4)
    assert.are.same({ v = 1 }, assert(t.request(srv.port, "GET", "/shared/get?k=ran:first")):json())
    assert.are.same({}, assert(t.request(srv.port, "GET", "/shared/get?k=ran:gone")):json())
    srv:stop()
  end)
end)

describe("moonlet.shared", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/pool", args = { "--pool-size", "8", "--shared-mem", "2000000" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("implements get/set/add/incr/delete/keys and ttl", function()
    local r = assert(t.request(srv.port, "GET", "/shared/api")):json()
    assert.are.same(true, r.set)
    assert.are.same("str", r.s)
    assert.are.same(42, r.n)
    assert.are.same(false, r.b)
    assert.are.same({ ok = false, err = "exists" }, r.add_again)
    assert.are.same({ ok = false, err = "not a number" }, r.incr_str)
    assert.are.same({ ok = false, err = "not found" }, r.incr_missing)
    assert.are.same(15, r.incr_init)
    assert.are.same(true, r.n_after)
    assert.are.same({ "b", "c", "s" }, r.keys)
    assert.are.same("short", r.ttl_before)
    assert.are.same(true, r.ttl_after)
    assert.matches("string, a number or a boolean", r.bad)
  end)

  it("increments atomically from the loop and the pool at once", function()
    local n = 400
    local half = n / 2
    local r1 = t.concurrent(srv.port, half, "GET /shared/incr?k=atomic HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    local r2 = t.concurrent(srv.port, half, "GET /shared/incr-pool?k=atomic HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(n, r1.ok + r2.ok)
    assert.are.same({ v = n }, assert(t.request(srv.port, "GET", "/shared/get?k=atomic")):json())
  end)

  it("lets finalizers use a dictionary while it is being read (no self-deadlock)", function()
    local res = assert(t.request(srv.port, "GET", "/shared/gc", { timeout = 20 }))
    assert.are.same({ ok = true, finalized = true }, res:json())
  end)

  it("says so when full (safe_set)", function()
    local r = assert(t.request(srv.port, "GET", "/shared/fill")):json()
    assert.is_truthy(r.stored > 100 and r.stored < 2000, "stored " .. r.stored)
    assert.matches("no memory.*%-%-shared%-mem 2000000", r.err)
  end)
end)

describe("watchdog", function()
  it("names the route that blocks the loop, and not one that yields", function()
    local srv = t.server{ app = "apps/seed_demo", args = { "--block-warn", "100" } }
    local c = t.connect(srv.port)
    c:send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    local line = srv:wait_log("blocked the event loop", 3)
    local ms = tonumber(assert.matches("GET /a blocked the event loop for (%d+) ms", line))
    assert.is_truthy(ms >= 900 and ms < 1500, "reported a 1 s stall as " .. ms .. " ms")
    assert.are.same({ route = "a" }, assert(c:read_response(5)):json())
    assert.are.same({ route = "c" }, assert(t.request(srv.port, "GET", "/c")):json())
    assert.are.same({ route = "d" }, assert(t.request(srv.port, "GET", "/d")):json())
    assert.are.same({ route = "b" }, assert(t.request(srv.port, "GET", "/b")):json())
    local _, count = srv:stderr():gsub("blocked the event loop", "")
    assert.are.same(1, count)
    srv:stop()
  end)

  it("reports a stall that is still going on within about a second", function()
    local srv = t.server{ app = "tests/apps/basic", args = { "--block-warn", "100" } }
    local c = t.connect(srv.port)
    c:send("GET /block?s=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = t.now()
    local line = srv:wait_log("blocked the event loop", 2.5)
    assert.is_truthy(t.now() - t0 < 2, "reported only after " .. (t.now() - t0) .. " s")
    assert.matches("GET /block blocked the event loop for %d+ ms %(still running%)", line)
    assert.are.same(200, assert(c:read_response(10)).status)
    srv:stop()
  end)

  it("reports a short stall with its length when it ends", function()
    local srv = t.server{ app = "tests/apps/basic", args = { "--block-warn", "50" } }
    assert.are.same(200, assert(t.request(srv.port, "GET", "/block?s=0.2")).status)
    local line = srv:wait_log("blocked the event loop", 2)
    local ms = tonumber(assert.matches("GET /block blocked the event loop for (%d+) ms:", line))
    assert.is_truthy(ms >= 190 and ms < 600, "reported a 0.2 s stall as " .. ms .. " ms")
    srv:stop()
  end)
end)
