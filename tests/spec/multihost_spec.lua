-- Several hosts (README "Scaling out"), all on 127.0.0.1: a throwaway redis-server
-- (tests/support/redis.lua), two moonlet hosts serving apps/chat with REDIS_URL and
-- --workers 2, and an nginx (tests/support/nginx.lua) running examples/scaling/nginx.conf
-- with their ports. Checked from outside: Redis's own answers (redis-cli), nginx's access
-- log (which host served each request, which it retried), real WebSocket and SSE clients
-- (tests/support/chat_watcher.py), a bounded load of concurrent clients (t.concurrent).
local t = require "moonlet.testing"
local nginx = require "tests.support.nginx"
local redis = require "tests.support.redis"

local fmt, concat = string.format, table.concat

local SITE = "examples/scaling/nginx.conf"
local ARGS = { "--workers", "2", "--graceful-timeout", "5" }   -- each host's, after the port
local WORKERS = 2

-- The command line of a host, as README "Scaling out" shows it.
local function command_line(port)
  return fmt("build/moonlet serve apps/chat --host 127.0.0.1 --port %d %s", port, concat(ARGS, " "))
end

-- redis-cli's answer, without its last newline.
local function redis_cli(rs, ...)
  return (rs:cli(...):gsub("\n$", ""))
end

-- The site config with the hosts' ports in place of 8001 and 8002 (listen: nginx.start's).
local function site(a, b)
  local conf = assert(t.read_file(SITE))
  local n1, n2
  conf, n1 = conf:gsub("127%.0%.0%.1:8001", "127.0.0.1:" .. a.port)
  conf, n2 = conf:gsub("127%.0%.0%.1:8002", "127.0.0.1:" .. b.port)
  assert(n1 == 1 and n2 == 1, SITE .. " names 127.0.0.1:8001 and :8002 once each")
  return conf
end

-- What nginx's access log says of the `want` requests matching `pattern` after its first
-- `after` entries: how many each host answered (the last upstream tried), how many nginx
-- retried on another host, their statuses. nginx writes an entry once the response is
-- sent: it waits (5 s at most) for them all.
local function served(ng, pattern, hosts, after, want)
  local deadline = t.now() + 5
  while true do
    local by, n, retried, statuses = {}, 0, 0, {}
    for _, h in ipairs(hosts) do by[h.port] = 0 end
    local log = ng:access()
    for i = after + 1, #log do
      local e = log[i]
      if e.request:find(pattern) then
        local port = tonumber(e.upstream[#e.upstream]:match(":(%d+)$"))
        by[port] = (by[port] or 0) + 1
        if #e.upstream > 1 then retried = retried + 1 end
        statuses[e.status] = (statuses[e.status] or 0) + 1
        n = n + 1
      end
    end
    if n >= want or t.now() > deadline then return by, retried, statuses end
    t.sleep(0.05)
  end
end

-- t.concurrent's failures, for a message.
local function kinds(res)
  local out = {}
  for k, n in pairs(res.error_kinds) do out[#out + 1] = k .. ": " .. n end
  return concat(out, ", ")
end

local STATS = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
local POST_BODY = '{"text":"counted"}'
local POST = "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             .. "Content-Length: " .. #POST_BODY .. "\r\nConnection: close\r\n\r\n" .. POST_BODY

-- A bounded load: waves of 32 requests at once (t.concurrent) through port for `seconds`;
-- at(elapsed) runs between two waves (it may stop a host). Returns how many were sent and
-- how each that did not get `status` failed ({} when none did).
local function waves(port, req, status, seconds, at)
  local sent, failed = 0, {}
  local t0 = t.now()
  while t.now() - t0 < seconds do
    at(t.now() - t0)
    local res = t.concurrent(port, 32, req, 20)
    sent = sent + 32
    for k, n in pairs(res.error_kinds) do failed[k] = (failed[k] or 0) + n end
    for st, n in pairs(res.statuses) do
      if st ~= status then failed["status " .. st] = (failed["status " .. st] or 0) + n end
    end
  end
  return sent, failed
end

-- Python's websockets: sends text to PORT's /ws and prints the first message back.
local SEND = [[
import asyncio, sys, websockets
async def main():
    async with websockets.connect("ws://127.0.0.1:%s/ws" % sys.argv[1]) as ws:
        await ws.send(sys.argv[2])
        print(await asyncio.wait_for(ws.recv(), 20), flush=True)
asyncio.run(main())
]]

describe("two hosts behind nginx, Redis between them", function()
  local rs, a, b, ng

  local function host()
    return t.server{ app = "apps/chat", args = ARGS, env = { REDIS_URL = rs.url }, timeout = 20 }
  end

  lazy_setup(function()
    rs = redis.start()
    a, b = host(), host()
    ng = nginx.start(site(a, b))
  end)
  lazy_teardown(function()
    if ng then ng:stop() end
    if a then a:stop() end
    if b then b:stop() end
    if rs then rs:stop() end
  end)

  it("README \"Scaling out\" shows the nginx config and the command lines this spec runs",
     function()
    local readme = assert(t.read_file("README.md"))
    local section = readme:match("\n## Scaling out\n(.-)\n## ")
    assert.is_truthy(section, "README.md has no \"## Scaling out\" section")
    assert.is_truthy(section:find(assert(t.read_file(SITE)), 1, true),
                     "README \"Scaling out\" does not show " .. SITE .. " as it is")
    for _, port in ipairs{ 8001, 8002 } do
      assert.is_truthy(section:find(command_line(port), 1, true), command_line(port))
    end
  end)

  it("each host process subscribes once, however many clients it has", function()
    -- 2 hosts x 2 workers, each subscribed by its startup hook before `listening on`
    assert.are.same("chat\n" .. 2 * WORKERS, redis_cli(rs, "PUBSUB", "NUMSUB", "chat"))
    local watchers = {}
    for i, port in ipairs{ a.port, a.port, ng.port } do
      watchers[i] = t.spawn({ "tests/support/chat_watcher.py", tostring(port) },
                            { bin = "/usr/bin/python3" })
    end
    for _, w in ipairs(watchers) do w:wait_log("^ready$", 20) end
    assert.are.same("chat\n" .. 2 * WORKERS, redis_cli(rs, "PUBSUB", "NUMSUB", "chat"))
    for _, w in ipairs(watchers) do w:kill(); w:finish() end
  end)

  it("1,000 concurrent POST /messages through nginx count exactly 1,000 in Redis, "
     .. "served by both hosts", function()
    local before = tonumber(redis_cli(rs, "GET", "chat:count")) or 0
    local at = #ng:access()
    local ok = 0
    for _ = 1, 4 do                     -- 4 waves of 250 connections at once
      local res = t.concurrent(ng.port, 250, POST, 60)
      assert.are.same({ [201] = 250 }, res.statuses, kinds(res))
      ok = ok + res.ok
    end
    assert.are.equal(1000, ok)
    assert.are.equal(before + 1000, tonumber(redis_cli(rs, "GET", "chat:count")))
    -- nginx's log: which host answered each (none retried: POST never is once sent)
    local by, retried, statuses = served(ng, "^POST /messages ", { a, b }, at, 1000)
    assert.are.same({ [201] = 1000 }, statuses)
    assert.are.equal(0, retried)
    assert.are.equal(1000, by[a.port] + by[b.port])
    assert.is_true(by[a.port] > 0 and by[b.port] > 0, fmt("A %d, B %d", by[a.port], by[b.port]))
    -- and every host reads the same count
    for _, h in ipairs{ a, b } do
      local res = assert(t.request(h.port, "GET", "/stats"))
      assert.are.same({ messages = before + 1000 }, res:json())
    end
  end)

  it("a message sent over WebSocket to host A reaches WebSocket and SSE clients of host B "
     .. "and clients through nginx", function()
    local watchers = {}
    for i, port in ipairs{ b.port, b.port, ng.port } do
      watchers[i] = t.spawn({ "tests/support/chat_watcher.py", tostring(port) },
                            { bin = "/usr/bin/python3" })
    end
    for _, w in ipairs(watchers) do w:wait_log("^ready$", 20) end
    local text = "across hosts " .. os.time()
    local sent = t.run({ "-c", SEND, tostring(a.port), text }, { bin = "/usr/bin/python3",
                                                                 timeout = 30 })
    assert.are.same(0, sent.status, sent.stderr)
    assert.are.same(text .. "\n", sent.stdout)       -- A's own client hears it too
    for _, w in ipairs(watchers) do
      assert.are.same(0, w:wait(30), w:stderr())
      local got = t.json_decode(w:stdout())
      assert.are.same(text, got.ws)
      assert.are.same({ event = "message", data = '{"text":"' .. text .. '"}' }, got.sse)
    end
  end)

  it("SIGTERM to host A under load through nginx: no GET fails, B serves the rest", function()
    local at = #ng:access()
    local stopped = false
    local sent, failed = waves(ng.port, STATS, 200, 4, function(elapsed)
      if elapsed > 1.5 and not stopped then
        assert(a:signal("TERM"))        -- and the load goes on
        stopped = true
      end
    end)
    assert.are.same({}, failed)
    assert.are.equal(0, a:wait(15))     -- a graceful stop: its in-flight requests finished
    a:finish()
    -- what nginx saw: each answered 200, by A before its stop and by B
    local by, retried, statuses = served(ng, "^GET /stats ", { a, b }, at, sent)
    assert.are.same({ [200] = sent }, statuses)
    assert.is_true(by[a.port] > 0 and by[b.port] > 0, fmt("A %d, B %d", by[a.port], by[b.port]))
    print(fmt("\n# SIGTERM under load: %d requests, A answered %d, B %d; nginx retried %d",
              sent, by[a.port], by[b.port], retried))
  end)

  -- A POST is never retried once sent, and a stopping host cuts what it has not read yet
  -- (its listening socket's queue; a keep-alive connection nginx reuses as it closes):
  -- a host is taken out of nginx first (`down`, a reload), then stopped.
  it("a host added (an nginx reload), then drained (down, a reload) and stopped under POST "
     .. "load: none fails, Redis counts each once", function()
    local c = host()
    ng:reload(site(c, b))               -- C takes A's place
    local before = tonumber(redis_cli(rs, "GET", "chat:count")) or 0
    local at = #ng:access()
    local drained = site(c, b):gsub("(127%.0%.0%.1:" .. c.port .. "[^;]*);", "%1 down;")
    local stopped = false
    local sent, failed = waves(ng.port, POST, 201, 3, function(elapsed)
      if elapsed > 1 and not stopped then
        ng:reload(drained)              -- returns once no request can reach C
        assert(c:signal("TERM"))
        stopped = true
      end
    end)
    assert.are.same({}, failed)
    assert.are.equal(0, c:wait(15))
    c:finish()
    assert.are.equal(before + sent, tonumber(redis_cli(rs, "GET", "chat:count")))
    local by, retried, statuses = served(ng, "^POST /messages ", { c, b }, at, sent)
    assert.are.same({ [201] = sent }, statuses)
    assert.are.equal(0, retried)
    assert.is_true(by[c.port] > 0 and by[b.port] > 0, fmt("C %d, B %d", by[c.port], by[b.port]))
  end)
end)

describe("a host with --workers, stopping", function()
  it("refuses new connections at once, while an event stream still holds its stop", function()
    local h = t.server{ app = "apps/chat", args = ARGS, env = { REDIS_URL = false } }
    local streams = {}
    for i = 1, 8 do                     -- on both workers, whichever the kernel picks
      local c = assert(h:connect())
      assert(c:send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
      assert.are.equal(200, assert(c:read_head(5)).status)
      streams[i] = c
    end
    assert(h:signal("TERM"))
    h:wait_log("shutting down: stopping 2 worker%(s%)", 5)
    -- the workers close their listeners first; the supervisor its sockets: nothing queues
    -- where no process will accept it (a load balancer tries another host at once)
    local refused
    for _ = 1, 150 do                   -- 3 s at most; the streams hold the stop 5 s
      local c, err = t.connect(h.port, nil, 1)
      if c then c:close() else refused = err; break end
      t.sleep(0.02)
    end
    assert.matches("refused", tostring(refused))
    assert.is_nil(h:poll())             -- still running: the streams hold it
    for _, c in ipairs(streams) do c:close() end
    assert.are.equal(0, h:wait(10))
  end)
end)

describe("a host whose Redis restarts", function()
  it("subscribes again, and its clients hear what is said after", function()
    local rs = redis.start()
    local port = rs.port
    local h = t.server{ app = "apps/chat", env = { REDIS_URL = rs.url } }
    local at = h:mark()
    rs:stop()
    h:wait_log("chat: the subscription to Redis channel chat ended %(redis: ", 10, at)
    local again = t.spawn({ "--port", tostring(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no" }, { bin = "redis-server" })
    h:wait_log("chat: subscribed to Redis channel chat again", 15, at)
    local w = t.spawn({ "tests/support/chat_watcher.py", tostring(h.port) },
                      { bin = "/usr/bin/python3" })
    w:wait_log("^ready$", 20)
    local res = assert(h:request("POST", "/messages", {
      headers = { ["content-type"] = "application/json" }, body = '{"text":"back"}' }))
    assert.are.same(201, res.status, res.body)
    assert.are.same(0, w:wait(30), w:stderr())
    assert.are.same("back", t.json_decode(w:stdout()).ws)
    assert.are.equal(0, h:stop())
    again:stop()
  end)
end)
