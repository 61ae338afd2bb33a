-- WebSocket (app:websocket) through the real binary (tests/apps/websocket): a real client
-- (Debian's python3-websockets) for the happy paths, raw frames for the failures.
local t = require "moonlet.testing"
local bit = require "bit"

local char, byte, rep, concat = string.char, string.byte, string.rep, table.concat
local band, bor, bxor, rshift = bit.band, bit.bor, bit.bxor, bit.rshift

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="   -- RFC 6455 1.3's example

-- A client frame: masked unless opts.mask == false; opts.fin == false for a fragment.
local function frame(op, payload, opts)
  opts = opts or {}
  local len, head = #payload, { char(bor(opts.fin == false and 0 or 0x80, op)) }
  local m = opts.mask == false and 0 or 0x80
  if len < 126 then
    head[2] = char(bor(m, len))
  elseif len < 65536 then
    head[2] = char(bor(m, 126), rshift(len, 8), band(len, 255))
  else
    head[2] = char(bor(m, 127), 0, 0, 0, 0, band(rshift(len, 24), 255),
                   band(rshift(len, 16), 255), band(rshift(len, 8), 255), band(len, 255))
  end
  if m == 0 then return concat(head) .. payload end
  local key = { 0x12, 0x34, 0x56, 0x78 }
  local out = {}
  for i = 1, len do out[i] = char(bxor(byte(payload, i), key[(i - 1) % 4 + 1])) end
  return concat(head) .. char(unpack(key)) .. concat(out)
end

-- Reads the server's frames off a raw connection: next() -> opcode, payload | nil, err.
local function frames(c)
  local buf = ""
  return function(timeout)
    while true do
      if #buf >= 2 then
        local b1, b2 = byte(buf, 1, 2)
        local len, pos = band(b2, 127), 3
        if len == 126 and #buf >= 4 then
          len, pos = byte(buf, 3) * 256 + byte(buf, 4), 5
        elseif len == 127 and #buf >= 10 then
          len = 0
          for i = 3, 10 do len = len * 256 + byte(buf, i) end
          pos = 11
        end
        if len < 126 or pos > 3 then
          if #buf >= pos - 1 + len then
            local payload = buf:sub(pos, pos + len - 1)
            buf = buf:sub(pos + len)
            return band(b1, 15), payload
          end
        end
      end
      local data, err = c:recv(timeout or 5)
      if not data then return nil, err end
      buf = buf .. data
    end
  end
end

local function close_code(payload)
  return byte(payload, 1) * 256 + byte(payload, 2), payload:sub(3)
end

local function handshake_request(path, extra)
  return "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
         .. "Connection: Upgrade\r\nSec-WebSocket-Key: " .. KEY .. "\r\n"
         .. "Sec-WebSocket-Version: 13\r\n" .. (extra or "") .. "\r\n"
end

-- Opens a raw WebSocket: the connection, the 101 response head, and its frame reader.
local function open(port, path, extra, first_bytes)
  local c = assert(t.connect(port))
  assert(c:send(handshake_request(path, extra) .. (first_bytes or "")))
  local res = assert(c:read_head(5))
  return c, res, frames(c)
end

local function py(port, script)
  local res = t.run({ "-c", script, tostring(port) }, { bin = "/usr/bin/python3", timeout = 30 })
  assert(res.status == 0, res.stderr)
  return res.stdout
end

local PY_HEAD = [[
import asyncio, sys, json, websockets
port = sys.argv[1]
def url(path): return "ws://127.0.0.1:%s%s" % (port, path)
]]

describe("websocket", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/websocket" } end)
  lazy_teardown(function() srv:stop() end)

  local function events()
    return assert(t.request(srv.port, "GET", "/events")):json()
  end

  local function wait_event(name, timeout)
    for _ = 1, (timeout or 5) * 20 do
      local v = events()[name]
      if v ~= nil then return v end
      require("moonlet").sleep(0.05)
    end
    error("no event " .. name)
  end

  it("echoes text, binary, fragmented messages; answers pings; closes with a code", function()
    local out = py(srv.port, PY_HEAD .. [[
async def main():
    async with websockets.connect(url("/echo")) as ws:
        await ws.send("hi"); print(await ws.recv())
        await ws.send(b"\x00\xffbin"); print(repr(await ws.recv()))
        await ws.send(["frag", "mented ", "text"]); print(await ws.recv())
        await ws.send([b"ab", b"cd"]); print(repr(await ws.recv()))
        pong = await ws.ping(b"x"); await pong; print("pong")
        await ws.send("ping me"); print(await ws.recv())
        await ws.send("\u00e9" * 40000); print(len(await ws.recv()))
        await ws.send("close 4001 bye")
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            print("closed", e.rcvd.code, e.rcvd.reason)
asyncio.run(main())
]])
    assert.are.same("hi\nb'\\x00\\xffbin'\nfragmented text\nb'abcd'\npong\npinged\n40000\n"
                    .. "closed 4001 bye\n", out)
    assert.are.same("4001 bye", wait_event("echo_closed"))
  end)

  it("answers the handshake with the RFC's accept value, then frames", function()
    local c, res, next_frame = open(srv.port, "/echo")
    assert.are.same(101, res.status)
    assert.are.same("websocket", res.headers["upgrade"])
    assert.are.same("Upgrade", res.headers["connection"])
    assert.are.same("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", res.headers["sec-websocket-accept"])
    assert.is_nil(res.headers["sec-websocket-protocol"])
    assert(c:send(frame(1, "raw hello")))
    assert.are.same({ 1, "raw hello" }, { next_frame() })
    assert(c:send(frame(9, "pp")))
    assert.are.same({ 10, "pp" }, { next_frame() })   -- pong, same payload
    assert(c:send(frame(8, char(3, 232) .. "done")))
    local op, payload = next_frame()
    assert.are.same(8, op)
    assert.are.same({ 1000, "done" }, { close_code(payload) })
    assert.is_true(c:is_closed(5))
    c:close()
  end)

  it("takes frames sent together with the handshake", function()
    local c, res, next_frame = open(srv.port, "/echo", nil, frame(1, "early") .. frame(1, "bird"))
    assert.are.same(101, res.status)
    assert.are.same({ 1, "early" }, { next_frame() })
    assert.are.same({ 1, "bird" }, { next_frame() })
    c:close()
  end)

  local function refused(path, bytes, code)
    local c, res, next_frame = open(srv.port, path)
    assert.are.same(101, res.status)
    assert(c:send(bytes))
    local op, payload = next_frame()
    assert.are.same(8, op)
    assert.are.same(code, (close_code(payload)))
    assert.is_true(c:is_closed(5))   -- failed: the server does not wait for our close
    c:close()
  end

  it("closes with 1002 on an unmasked frame", function()
    refused("/echo", frame(1, "naked", { mask = false }), 1002)
  end)

  it("closes with 1002 on an unknown opcode", function()
    refused("/echo", frame(3, "what"), 1002)
  end)

  it("closes with 1002 on a control frame over 125 bytes", function()
    refused("/echo", frame(9, rep("p", 126)), 1002)
  end)

  it("closes with 1002 on a continuation without a message", function()
    refused("/echo", frame(0, "orphan"), 1002)
  end)

  it("closes with 1007 on a text message that is not UTF-8", function()
    refused("/echo", frame(1, "ok \xff\xfe"), 1007)
  end)

  it("closes with 1007 on UTF-8 cut between fragments and never completed", function()
    refused("/echo", frame(1, "\xc3", { fin = false }) .. frame(0, "x"), 1007)
  end)

  it("closes with 1009 on a message over max_message; the handler sees 1009", function()
    refused("/small", frame(2, rep("b", 101)), 1009)
    assert.are.same(1009, wait_event("small_closed"))
  end)

  it("closes with 1009 on a message over --ws-max-message", function()
    local s = t.server{ app = "tests/apps/websocket", args = { "--ws-max-message", "1000" } }
    local c, _, next_frame = open(s.port, "/echo")
    assert(c:send(frame(1, rep("a", 1000))))
    assert.are.same({ 1, rep("a", 1000) }, { next_frame() })
    assert(c:send(frame(1, rep("a", 600), { fin = false }) .. frame(0, rep("a", 401))))
    local op, payload = next_frame()
    assert.are.same({ 8, 1009 }, { op, (close_code(payload)) })
    c:close()
    s:stop()
  end)

  it("refuses a plain GET with 426 and the headers to upgrade", function()
    local res = assert(t.request(srv.port, "GET", "/echo"))
    assert.are.same(426, res.status)
    assert.are.same("websocket", res.headers["upgrade"])
    assert.are.same("13", res.headers["sec-websocket-version"])
    assert.matches("WebSocket endpoint", res:json().detail)
  end)

  it("refuses another version with 426, a bad handshake with 400, other methods with 405",
     function()
    local function status(req)
      local c = assert(t.connect(srv.port))
      assert(c:send(req))
      local res = assert(c:read_response(5))
      c:close()
      return res
    end
    local res = status(handshake_request("/echo"):gsub("Version: 13", "Version: 8"))
    assert.are.same(426, res.status)
    assert.are.same("13", res.headers["sec-websocket-version"])
    assert.are.same(400, status(handshake_request("/echo"):gsub("Sec%-WebSocket%-Key: [^\r]*\r\n",
                                                                 "")).status)
    assert.are.same(400, status(handshake_request("/echo"):gsub("Key: [^\r]*",
                                                                 "Key: short")).status)
    assert.are.same(400, status(handshake_request("/echo"):gsub("Connection: Upgrade",
                                                                 "Connection: keep-alive")).status)
    assert.are.same(400, status(handshake_request("/echo"):gsub("HTTP/1.1", "HTTP/1.0")).status)
    assert.are.same(405, status(handshake_request("/echo"):gsub("^GET", "POST")).status)
  end)

  it("allows only the listed origins (403 for others)", function()
    local c, res, next_frame = open(srv.port, "/origin", "Origin: https://good.example\r\n")
    assert.are.same(101, res.status)
    assert.are.same({ 1, "hello" }, { next_frame() })
    c:close()
    for _, extra in ipairs{ "Origin: https://evil.example\r\n", "" } do
      c = assert(t.connect(srv.port))
      assert(c:send(handshake_request("/origin", extra)))
      res = assert(c:read_response(5))
      assert.are.same(403, res.status)
      c:close()
    end
  end)

  it("negotiates a subprotocol: the client's first that the route accepts", function()
    local out = py(srv.port, PY_HEAD .. [[
async def main():
    async with websockets.connect(url("/proto"), subprotocols=["chat.v0", "chat.v1", "chat.v2"]) as ws:
        print(ws.subprotocol, await ws.recv())
    async with websockets.connect(url("/proto")) as ws:
        print(ws.subprotocol, await ws.recv())
asyncio.run(main())
]])
    assert.are.same("chat.v1 chat.v1\nNone none\n", out)
  end)

  it("gives path parameters, dependencies and headers; deferred functions run", function()
    local out = py(srv.port, PY_HEAD .. [[
async def main():
    async with websockets.connect(url("/rooms/42?user=ann"), extra_headers={"x-agent": "py"}) as ws:
        print(await ws.recv())
asyncio.run(main())
]])
    assert.are.same({ room = 42, user = "ann", agent = "py", url = "/rooms/42?user=ann" },
                    require("moonlet").json.decode(out))
    assert.are.same("nil", wait_event("defer_ran"))
  end)

  it("answers over HTTP when a dependency refuses (no upgrade)", function()
    local c = assert(t.connect(srv.port))
    assert(c:send(handshake_request("/private")))
    local res = assert(c:read_response(5))
    assert.are.same(401, res.status)
    c:close()
    c, res = open(srv.port, "/private", "Authorization: Bearer yes\r\n")
    assert.are.same(101, res.status)
    c:close()
  end)

  it("closes with 1011 when the handler raises, and logs the route with the traceback",
     function()
    local mark = srv:mark()
    local c, _, next_frame = open(srv.port, "/fail")
    assert.are.same({ 1, "about to fail" }, { next_frame() })
    local op, payload = next_frame()
    assert.are.same({ 8, 1011 }, { op, (close_code(payload)) })
    assert(srv:wait_log("GET /fail: tests/apps/websocket/app.lua:%d+: boom", 5, mark))
    c:close()
  end)

  it("closes with 1011 and logs an http_error raised after the handshake", function()
    local mark = srv:mark()
    local c, _, next_frame = open(srv.port, "/fail/http_error")
    assert.are.same({ 1, "about to fail" }, { next_frame() })
    local op, payload = next_frame()
    assert.are.same({ 8, 1011 }, { op, (close_code(payload)) })
    assert(srv:wait_log("GET /fail/http_error: HTTP 403: too late for HTTP raised after the "
                        .. "handshake %(closed with 1011%)", 5, mark))
    c:close()
  end)

  it("pings an idle client, then closes it with 1001 after idle_timeout", function()
    local c, _, next_frame = open(srv.port, "/idle")
    assert.are.same(9, (next_frame()))   -- the keepalive ping, left unanswered
    local op, payload = next_frame()
    assert.are.same(8, op)
    assert.are.same({ 1001, "idle timeout" }, { close_code(payload) })
    assert(c:send(frame(8, payload)))   -- our answer ends the handshake
    assert.is_true(c:is_closed(5))
    assert.are.same("1001 idle timeout", wait_event("idle_closed"))
    c:close()
  end)

  it("tells the handler 1006 when the client vanishes", function()
    local c, res = open(srv.port, "/echo")
    assert.are.same(101, res.status)
    c:reset()
    assert.are.same("1006 ", wait_event("echo_closed"))
  end)

  it("makes ws:send wait while the client does not read (bounded memory)", function()
    local function rss_kb()
      local f = assert(io.open("/proc/" .. srv.pid .. "/status"))
      local kb = tonumber(f:read("*a"):match("VmRSS:%s*(%d+)"))
      f:close()
      return kb
    end
    local before = rss_kb()
    local c, res = open(srv.port, "/flood")
    assert.are.same(101, res.status)
    local last, stable = -1, 0
    while stable < 5 do   -- the count stops growing: the sender waits
      require("moonlet").sleep(0.1)
      local n = events().flood_sent or 0
      if n == last then stable = stable + 1 else stable, last = 0, n end
    end
    assert.is_true(last < 4000)
    assert.is_nil(events().flood_done)
    assert.is_true(rss_kb() - before < 64 * 1024, "RSS grew by more than 64 MB")
    c:reset()   -- the waiting send returns nil, "closed"
    assert.are.same(last, wait_event("flood_done"))
  end)

  it("broadcasts to a room and forgets who left; HTTP goes on meanwhile", function()
    local out = py(srv.port, PY_HEAD .. [[
async def main():
    a = await websockets.connect(url("/chat"))
    b = await websockets.connect(url("/chat"))
    c = await websockets.connect(url("/chat"))
    await a.send("hello all")
    print(await a.recv(), await b.recv(), await c.recv())
    await c.close()
    await b.send("two left")
    print(await a.recv(), await b.recv())
    await a.close(); await b.close()
asyncio.run(main())
]])
    assert.are.same("hello all hello all hello all\ntwo left two left\n", out)
    for _ = 1, 100 do
      if events().chat_left == 3 then break end
      require("moonlet").sleep(0.05)
    end
    assert.are.same(3, events().chat_left)
    assert.are.same({ members = 0 }, assert(t.request(srv.port, "GET", "/chat/size")):json())
    assert.are.same({ message = "hello" }, assert(t.request(srv.port, "GET", "/hello")):json())
  end)

  it("closes open WebSockets with 1001 at a graceful stop", function()
    local s = t.server{ app = "tests/apps/websocket" }
    local c, _, next_frame = open(s.port, "/echo")
    assert(c:send(frame(1, "still here")))
    assert.are.same({ 1, "still here" }, { next_frame() })
    s:signal("TERM")
    local op, payload = next_frame()
    assert.are.same(8, op)
    assert.are.same({ 1001, "server shutting down" }, { close_code(payload) })
    assert(c:send(frame(8, payload)))
    assert.is_true(c:is_closed(5))
    c:close()
    assert.are.same(0, s:wait(10))
  end)

  it("refuses { pool = true } and bad options when the app loads", function()
    local dir = t.tmpdir()
    local cases = {
      { "{ pool = true }", "option pool is not supported" },
      { "{ subprotocols = { 'a b' } }", "subprotocols must be a list of tokens" },
      { "{ idle_timeout = -1 }", "idle_timeout must be a number of seconds" },
      { "{ max_message = 0 }", "max_message must be a positive integer" },
    }
    for _, case in ipairs(cases) do
      t.write_file(dir .. "/app.lua", "local app = require('moonlet').app()\n"
                   .. "app:websocket('/ws', " .. case[1] .. ", function(ws) end)\nreturn app\n")
      local res = t.run({ "serve", dir, "--port", "0" })
      assert.are.same(2, res.status)
      assert.matches(case[2], res.stderr, 1, true)
      assert.matches("app.lua:2", res.stderr, 1, true)
    end
  end)
end)
