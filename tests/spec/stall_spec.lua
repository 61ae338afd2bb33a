-- A handler that holds the event loop (the seeds' /a mistake): clients whose bytes arrived
-- meanwhile are still served, the stall does not count against their timeouts, and the
-- server can always be stopped.
local t = require "moonlet.testing"

local function get(path)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"
end

describe("a loop held longer than the timeouts", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/stall",
                    args = { "--header-timeout", "1", "--keepalive-timeout", "1" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("serves the requests that arrived while a handler held the loop", function()
    local conns = {}
    for i = 1, 20 do conns[i] = t.connect(srv.port) end   -- accepted: their deadlines run
    t.sleep(0.1)
    local blocker = t.connect(srv.port)
    blocker:send(get("/block?s=2"))
    t.sleep(0.3)   -- the loop is held now; these bytes arrive in time, unread
    for _, c in ipairs(conns) do c:send(get("/hello")) end
    for i, c in ipairs(conns) do
      local res, err = c:read_response(5)
      assert.is_truthy(res, "connection " .. i .. " got no response: " .. tostring(err))
      assert.are.same(200, res.status)
    end
    assert.are.same({ blocked = 2 }, assert(blocker:read_response(5)):json())
  end)

  it("serves the connections accepted during a long loop turn", function()
    -- The seeds' 100 concurrent /a in small: a turn that reads one blocking request and
    -- then accepts the connections that queued up meanwhile.
    local early = t.connect(srv.port)
    local blocker = t.connect(srv.port)
    blocker:send(get("/block?s=0.5"))
    t.sleep(0.2)
    early:send(get("/block?s=1.5"))   -- read first in the turn after this block ...
    t.sleep(0.1)
    local late = {}
    for i = 1, 10 do                   -- ... then these are accepted, in the same turn
      late[i] = t.connect(srv.port)
      late[i]:send(get("/hello"))
    end
    assert.are.same(200, assert(blocker:read_response(5)).status)
    assert.are.same(200, assert(early:read_response(5)).status)
    for i, c in ipairs(late) do
      local res, err = c:read_response(5)
      assert.is_truthy(res, "connection " .. i .. " got no response: " .. tostring(err))
      assert.are.same(200, res.status)
    end
  end)

  it("keeps the connection of the request that held the loop", function()
    local c = t.connect(srv.port)
    c:send(get("/block?s=2"))
    assert.are.same(200, assert(c:read_response(5)).status)
    c:send(get("/hello"))   -- at once: the connection has not idled at all
    assert.are.same(200, assert(c:read_response(5)).status)
  end)

  it("does not count the stall against an idle keep-alive connection", function()
    local idle = t.connect(srv.port)
    idle:send(get("/hello"))
    assert.are.same(200, assert(idle:read_response(5)).status)
    local blocker = t.connect(srv.port)
    blocker:send(get("/block?s=2"))
    assert.are.same(200, assert(blocker:read_response(5)).status)
    -- idle 2.1 s by the clock, 0.1 s of it while the server could read
    idle:send(get("/hello"))
    assert.are.same(200, assert(idle:read_response(5)).status)
    -- and an idle connection is still closed once its own idle time is over
    local t0 = t.now()
    assert.is_truthy(idle:is_closed(5), "idle keep-alive connection left open")
    assert.is_truthy(t.now() - t0 < 3, "closed after " .. (t.now() - t0) .. " s")
  end)

  it("still disconnects a client that sends its headers too slowly", function()
    local c = t.connect(srv.port)
    c:send("GET /hello HTTP/1.1\r\n")
    local t0 = t.now()
    assert.is_truthy(c:is_closed(5), "slow client not disconnected")
    assert.is_truthy(t.now() - t0 < 3,
                     "took " .. (t.now() - t0) .. " s to disconnect a slow client")
  end)
end)

describe("stopping while a handler never yields", function()
  -- Exit status within `seconds`, or nil: then the server is killed, so a failure leaves
  -- nothing running.
  local function exit_status(srv, seconds)
    local status = srv:wait(seconds)
    if not status then srv:kill() end
    return status
  end

  local function spinning(args)
    local srv = t.server{ app = "tests/apps/stall", args = args }
    local c = t.connect(srv.port)
    c:send(get("/spin"))
    srv:wait_log("GET /spin blocked the event loop", 5)   -- it holds the loop now
    return srv, c
  end

  it("stops at once on a second SIGTERM", function()
    local srv = spinning{ "--graceful-timeout", "30" }
    srv:signal("TERM")
    t.sleep(0.2)
    local t0 = t.now()
    srv:signal("TERM")
    assert.are.same(1, exit_status(srv, 3))
    assert.is_truthy(t.now() - t0 < 2, "took " .. (t.now() - t0) .. " s")
    srv:wait_log("asked to stop again: GET /spin holds the event loop .*dropping 1 request", 1)
    srv:stop()
  end)

  it("stops at once on SIGINT then SIGINT, with the watchdog's warnings off", function()
    local srv = t.server{ app = "tests/apps/stall",
                          args = { "--graceful-timeout", "30", "--block-warn", "0" } }
    local c = t.connect(srv.port)
    c:send(get("/spin"))
    t.sleep(0.3)
    srv:signal("INT")
    t.sleep(0.2)
    srv:signal("INT")
    assert.are.same(1, exit_status(srv, 3))
    srv:wait_log("asked to stop again: .*dropping 1 request", 1)
    srv:stop()
  end)

  it("exits when --graceful-timeout ends, with status 1 and the requests it dropped", function()
    local srv = spinning{ "--graceful-timeout", "1" }
    local busy = t.connect(srv.port)   -- a second request, waiting behind the spinning one
    busy:send(get("/hello"))
    local t0 = t.now()
    srv:signal("TERM")
    assert.are.same(1, exit_status(srv, 4))
    local took = t.now() - t0
    assert.is_truthy(took > 0.9 and took < 3, "exited after " .. took .. " s")
    srv:wait_log("graceful timeout %(1%.0s%): GET /spin holds the event loop .*dropping 1 request", 1)
    srv:stop()
  end)
end)

describe("stopping with requests still running", function()
  it("stops at once on a second signal, with status 1 and the requests it dropped", function()
    local srv = t.server{ app = "tests/apps/stall", args = { "--graceful-timeout", "30" } }
    local a, b = t.connect(srv.port), t.connect(srv.port)
    a:send(get("/sleep?s=30"))
    b:send(get("/sleep?s=30"))
    t.sleep(0.2)
    srv:signal("TERM")
    t.sleep(0.2)
    local t0 = t.now()
    srv:signal("INT")
    assert.are.same(1, srv:wait(3))
    assert.is_truthy(t.now() - t0 < 2, "took " .. (t.now() - t0) .. " s")
    srv:wait_log("asked to stop again: closing 2 connection%(s%), dropping 2 request", 1)
    assert.is_truthy(a:is_closed(1) and b:is_closed(1))
    srv:stop()
  end)
end)

describe("the watchdog thread of an idle server", function()
  -- the thread named ml-watchdog among the server's, and how often it has slept and woken
  local function watchdog_wakeups(pid)
    local p = io.popen("ls /proc/" .. pid .. "/task")
    for tid in p:read("*a"):gmatch("%d+") do
      local dir = "/proc/" .. pid .. "/task/" .. tid
      local comm = io.open(dir .. "/comm")
      local name = comm and comm:read("*l")
      if comm then comm:close() end
      if name == "ml-watchdog" then
        local f = assert(io.open(dir .. "/status"))
        local n = tonumber(f:read("*a"):match("\nvoluntary_ctxt_switches:%s*(%d+)"))
        f:close()
        p:close()
        return n
      end
    end
    p:close()
    error("no thread named ml-watchdog in " .. pid)
  end

  it("wakes a few times a second, not every 25 ms, while no handler runs", function()
    local srv = t.server{ app = "tests/apps/stall" }
    local before = watchdog_wakeups(srv.pid)
    t.sleep(2)
    local woke = watchdog_wakeups(srv.pid) - before
    -- every 150 ms: about 13 in 2 s (sampling every 25 ms, as while Lua runs, made 80)
    assert.is_truthy(woke >= 5 and woke <= 30, woke .. " wake-ups in 2 s")
    -- and it still reports a handler holding the loop past a second, while it holds it
    local c = t.connect(srv.port)
    c:send(get("/block?s=1.5"))
    srv:wait_log("GET /block blocked the event loop for %d+ ms %(still running%)", 3)
    assert.are.same({ blocked = 1.5 }, assert(c:read_response(5)):json())
    srv:stop()
  end)
end)
