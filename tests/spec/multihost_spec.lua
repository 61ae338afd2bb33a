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

local function redis_cli(rs, ...)
  local r = t.run({ "-h", "127.0.0.1", "-p", tostring(rs.port), "--raw", ... },
                  { bin = "redis-cli" })
  assert(r.status == 0, r.stderr)
  return (r.stdout:gsub("%s+$", ""))
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

-- How many of nginx's log entries for request lines matching `pattern` each host answered
-- (the last upstream tried), how many were retried on another, and their statuses; only
-- the entries after the first `after`.
local function served(ng, pattern, hosts, after)
  local by, retried, statuses = {}, 0, {}
  for _, h in ipairs(hosts) do by[h.port] = 0 end
  local log = ng:access()
  for i = (after or 0) + 1, #log do
    local e = log[i]
    if e.request:find(pattern) then
      local port = tonumber(e.upstream[#e.upstream]:match(":(%d+)$"))
      by[port] = (by[port] or 0) + 1
      if #e.upstream > 1 then retried = retried + 1 end
      statuses[e.status] = (statuses[e.status] or 0) + 1
    end
  end
  return by, retried, statuses
end

-- t.concurrent's failures, for a message.
local function kinds(res)
  local out = {}
  for k, n in pairs(res.error_kinds) do out[#out + 1] = k .. ": " .. n end
  return concat(out, ", ")
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
    for i = 1, 3 do
      watchers[i] = t.spawn({ "tests/support/chat_watcher.py", tostring(i == 3 and ng.port or a.port) },
                            { bin = "/usr/bin/python3" })
    end
    for _, w in ipairs(watchers) do w:wait_log("^ready$", 20) end
    assert.are.same("chat\n" .. 2 * WORKERS, redis_cli(rs, "PUBSUB", "NUMSUB", "chat"))
    for _, w in ipairs(watchers) do w:kill(); w:finish() end
  end)

  it("1,000 concurrent POST /messages through nginx count exactly 1,000 in Redis, "
     .. "served by both hosts", function()
    local before = tonumber(redis_cli(rs, "GET", "chat:count")) or 0
    local body = '{"text":"counted"}'
    local req = "POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                .. "Content-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body
    local ok = 0
    for _ = 1, 4 do                     -- 4 waves of 250 connections at once
      local res = t.concurrent(ng.port, 250, req, 60)
      assert.are.same({ [201] = 250 }, res.statuses, kinds(res))
      ok = ok + res.ok
    end
    assert.are.equal(1000, ok)
    assert.are.equal(before + 1000, tonumber(redis_cli(rs, "GET", "chat:count")))
    -- nginx's log: which host answered each (none retried: POST never is once sent)
    local by, retried, statuses = served(ng, "^POST /messages ", { a, b })
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

  it("SIGTERM to host A under load through nginx: no request fails, B serves the rest",
     function()
    local at = #ng:access()
    local req = "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    local sent, ok, failed, term = 0, 0, {}, false
    local t0 = t.now()
    while t.now() - t0 < 4 do           -- waves of 32 at once, for 4 s; A stops at 1.5 s
      if not term and t.now() - t0 > 1.5 then
        assert(a:signal("TERM"))
        term = true
      end
      local res = t.concurrent(ng.port, 32, req, 20)
      sent, ok = sent + 32, ok + res.ok
      for k, n in pairs(res.error_kinds) do failed[k] = (failed[k] or 0) + n end
      for st, n in pairs(res.statuses) do
        if st ~= 200 then failed["status " .. st] = (failed["status " .. st] or 0) + n end
      end
    end
    assert.are.same({}, failed)
    assert.are.equal(sent, ok)
    assert.are.equal(0, a:wait(15))     -- a graceful stop: its in-flight requests finished
    a:finish()
    -- what nginx saw: each answered 200, by A before its stop and by B, some retried
    local by, retried, statuses = served(ng, "^GET /stats ", { a, b }, at)
    assert.are.same({ [200] = sent }, statuses)
    assert.is_true(by[a.port] > 0 and by[b.port] > 0, fmt("A %d, B %d", by[a.port], by[b.port]))
    print(fmt("\n# SIGTERM under load: %d requests, A answered %d, B %d; nginx retried %d",
              sent, by[a.port], by[b.port], retried))
  end)

end)
