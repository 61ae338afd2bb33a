-- A handler that holds the event loop (the seeds' /a mistake): clients whose bytes arrived
-- meanwhile are still served, the stall does not count against their timeouts, and the
-- server can always be stopped.
local t = require "moonlet.testing"

local function get(path)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"
end

describe("a loop held longer than the timeouts", function()
  local srv
  before_all(function()
    srv = t.server{ app = "tests/apps/stall",
                    args = { "--header-timeout", "1", "--keepalive-timeout", "1" } }
  end)
  after_all(function() srv:stop() end)

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
      ok(res, "connection " .. i .. " got no response: " .. tostring(err))
      eq(res.status, 200)
    end
    eq(assert(blocker:read_response(5)):json(), { blocked = 2 })
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
    eq(assert(blocker:read_response(5)).status, 200)
    eq(assert(early:read_response(5)).status, 200)
    for i, c in ipairs(late) do
      local res, err = c:read_response(5)
      ok(res, "connection " .. i .. " got no response: " .. tostring(err))
      eq(res.status, 200)
    end
  end)

  it("keeps the connection of the request that held the loop", function()
    local c = t.connect(srv.port)
    c:send(get("/block?s=2"))
    eq(assert(c:read_response(5)).status, 200)
    c:send(get("/hello"))   -- at once: the connection has not idled at all
    eq(assert(c:read_response(5)).status, 200)
  end)

  it("does not count the stall against an idle keep-alive connection", function()
    local idle = t.connect(srv.port)
    idle:send(get("/hello"))
    eq(assert(idle:read_response(5)).status, 200)
    local blocker = t.connect(srv.port)
    blocker:send(get("/block?s=2"))
    eq(assert(blocker:read_response(5)).status, 200)
    -- idle 2.1 s by the clock, 0.1 s of it while the server could read
    idle:send(get("/hello"))
    eq(assert(idle:read_response(5)).status, 200)
    -- and an idle connection is still closed once its own idle time is over
    local t0 = t.now()
    ok(idle:is_closed(5), "idle keep-alive connection left open")
    ok(t.now() - t0 < 3, "closed after " .. (t.now() - t0) .. " s")
  end)

  it("still disconnects a client that sends its headers too slowly", function()
    local c = t.connect(srv.port)
    c:send("GET /hello HTTP/1.1\r\n")
    local t0 = t.now()
    ok(c:is_closed(5), "slow client not disconnected")
    ok(t.now() - t0 < 3, "took " .. (t.now() - t0) .. " s to disconnect a slow client")
  end)
end)
