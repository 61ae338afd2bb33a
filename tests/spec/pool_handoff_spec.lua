-- The hand-off between the loop and the pool's threads (core/sched/workers.c): one
-- wake-up per thread needed, not per job (a cascade). Many connections on few threads, a
-- burst after idle, a short job beside a sleeping one, no CPU spent while idle, queued
-- jobs through a graceful stop.
local t = require "moonlet.testing"

local APP = "tests/apps/pool"

-- The server's CPU time (user + system, all threads) in seconds, from /proc.
local function cpu_seconds(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for v in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = v end
  -- after "(comm) ": state is field 3, utime 14 and stime 15 (man 5 proc), so 12 and 13 here
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100
end

describe("the pool's hand-off", function()
  local srv
  lazy_setup(function() srv = t.server{ app = APP, args = { "--pool-size", "2" } } end)
  lazy_teardown(function() srv:stop() end)

  it("answers 200 connections x 5 pipelined requests on 2 threads, each in order", function()
    local conns, n, per = {}, 200, 5
    for i = 1, n do
      local c = assert(t.connect(srv.port))
      local batch = {}
      for k = 1, per do
        batch[k] = "GET /p/" .. (i * 10 + k) .. " HTTP/1.1\r\nHost: x\r\n\r\n"
      end
      assert(c:send(table.concat(batch)))
      conns[i] = c
    end
    local good = 0
    for i = 1, n do
      for k = 1, per do
        local res = assert(conns[i]:read_response(20))
        assert.are.same(200, res.status)
        assert.are.same(i * 10 + k, res:json().id)
        good = good + 1
      end
      conns[i]:close()
    end
    assert.are.same(n * per, good)
  end)

  it("answers a burst of 100 connections after the threads stood idle", function()
    t.sleep(1.2)
    local r = t.concurrent(srv.port, 100, "GET /p/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 20)
    assert.are.same(100, r.ok, "errors: " .. r.errors)
  end)

  it("runs a short job on the other thread while one sleeps", function()
    assert.are.same(200, srv:request("GET", "/p/1").status)   -- both threads have started
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /p/sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    t.sleep(0.1)
    local t0 = t.now()
    for i = 1, 20 do assert.are.same({ id = i, method = "GET", path = "/p/" .. i, in_pool = true },
                                     (srv:request("GET", "/p/" .. i):json())) end
    assert.is_truthy(t.now() - t0 < 0.8, "short jobs waited for the sleeping thread")
    assert.are.same({ slept = 1 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("spends no CPU while idle (the threads sleep, they do not spin)", function()
    local r = t.concurrent(srv.port, 50, "GET /p/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 20)
    assert.are.same(50, r.ok)
    t.sleep(0.2)
    local c0 = cpu_seconds(srv.pid)
    t.sleep(1)
    local used = cpu_seconds(srv.pid) - c0
    assert.is_truthy(used < 0.05, "the idle server used " .. used .. " s of CPU in 1 s")
  end)
end)

describe("a pool thread that never finds the queue empty", function()
  it("still runs its state's background work between jobs", function()
    local srv = t.server{ app = APP, args = { "--pool-size", "1" } }
    assert.are.same({ spawned = true }, srv:request("GET", "/p/bg"):json())
    -- 20 connections x 50 pipelined jobs of 2 ms of CPU each: the one thread's queue holds
    -- about 20 jobs for 2 s; its background task's 50 ms sleep ends meanwhile
    local conns, per = {}, 50
    local batch = string.rep("GET /p/spin?ms=2 HTTP/1.1\r\nHost: x\r\n\r\n", per)
    for i = 1, 20 do
      conns[i] = assert(t.connect(srv.port))
      assert(conns[i]:send(batch))
    end
    t.sleep(0.5)
    local v = srv:request("GET", "/shared/get?k=bg"):json().v
    local checked = t.now()
    local last
    for i = 1, 20 do
      for _ = 1, per do assert.are.same(200, assert(conns[i]:read_response(30)).status) end
      conns[i]:close()
    end
    last = t.now()
    assert.is_truthy(last - checked > 0.2, "the jobs were over before the check: no test")
    assert.are.same(1, v, "the background task did not run while the thread was busy")
    srv:stop()
  end)
end)

describe("the pool's hand-off at a graceful stop", function()
  it("runs the jobs still queued and answers them before the server exits", function()
    local srv = t.server{ app = APP, args = { "--pool-size", "1" } }
    local conns = {}
    for i = 1, 4 do   -- one runs, three wait in the queue
      conns[i] = assert(t.connect(srv.port))
      assert(conns[i]:send("GET /p/sleep?s=0.2&tag=stop HTTP/1.1\r\nHost: x\r\n\r\n"))
    end
    t.sleep(0.1)
    srv:signal("TERM")
    for i = 1, 4 do
      local res = assert(conns[i]:read_response(10))
      assert.are.same(200, res.status)
      assert.are.same({ slept = 0.2 }, res:json())
      conns[i]:close()
    end
    assert.are.same(0, srv:wait(10))
    srv:stop()
  end)
end)
