-- What a connection holds while it waits, made small (server.h, headers.c): its URL and
-- header store and its header list start small and grow with the request; a connection
-- that is not writing carries no write request. These specs drive those paths through real
-- sockets: thousands of waiting connections whose requests outgrow the first store, a
-- request arriving in pieces across the growth, pipelined requests of both sizes, and
-- responses the kernel does not take at once (the write request made, and dropped when the
-- client leaves mid-response).
local t = require "moonlet.testing"

-- "X-Pad-1: 1111...\r\n" ... n header lines, each value `len` bytes long
local function pad_headers(n, len)
  local lines = {}
  for i = 1, n do
    lines[i] = "X-Pad-" .. i .. ": " .. string.rep(tostring(i % 10), len) .. "\r\n"
  end
  return table.concat(lines)
end

describe("requests waiting in moonlet.sleep", function()
  local srv
  lazy_setup(function()
    t.raise_nofile(1400)
    srv = t.server{ app = "tests/apps/basic", args = { "--log-level", "warn" } }
  end)
  lazy_teardown(function() srv:stop() end)

  local function heap()
    local res = assert(t.request(srv.port, "GET", "/lua-heap"))
    assert.are.same(200, res.status, res.body)
    return res:json()
  end

  -- A coroutine's stack starts at 40 slots and doubles when a call needs more: a frame
  -- more in runtime.dispatch once made every waiting request 320 bytes larger (1.24 KB of
  -- Lua heap each instead of 0.92 with apps/hello; 2.79 -> 3.08 KB per connection in all).
  it("hold under 1 KB of Lua heap each: their coroutines keep their first stack", function()
    local n = 1000
    local before = heap()
    assert.are.same(0, before.waiting)
    local conns = {}
    for i = 1, n do
      conns[i] = assert(t.connect(srv.port))
      assert(conns[i]:send("GET /wait?s=5 HTTP/1.1\r\nHost: x\r\n\r\n"))
    end
    local during, deadline = heap(), t.now() + 20
    while during.waiting < n and t.now() < deadline do
      t.sleep(0.05)
      during = heap()
    end
    assert.are.same(n, during.waiting)
    local per = (during.kb - before.kb) / n
    assert.is_true(per < 1.0, string.format("%.3f KB of Lua heap per waiting request", per))
    for _, c in ipairs(conns) do c:close() end
  end)
end)

describe("connections held by the thousand", function()
  local srv
  lazy_setup(function()
    t.raise_nofile(4600)
    srv = t.server{ app = "tests/apps/basic",
                    args = { "--max-body", "8000000", "--log-level", "warn" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("answers 2,000 concurrent sleeping requests whose header blocks outgrow the first store",
     function()
    local req = "GET /sleep?s=0.5&pad=" .. string.rep("p", 200) .. " HTTP/1.1\r\nHost: x\r\n"
                .. pad_headers(12, 20) .. "\r\n"
    local r = t.concurrent(srv.port, 2000, req, 60)
    local kinds = {}
    for k, n in pairs(r.error_kinds) do kinds[#kinds + 1] = k .. " x" .. n end
    assert.are.same(0, r.errors, table.concat(kinds, ", "))
    assert.are.same(2000, r.ok)
    assert.are.same({ [200] = 2000 }, r.statuses)
    -- every connection waited at once: well under 2,000 x 0.5 s
    assert.is_true(r.elapsed < 30, tostring(r.elapsed))
  end)

  it("reads a request that arrives in pieces while its store and list grow", function()
    local c = t.connect(srv.port)
    local long = string.rep("v", 300)
    -- the URL in three pieces, then 20 headers, each name and value split
    local pieces = { "GET /headers?a=", long, "&b=2 HTTP/1.1\r\nHo", "st: x\r\n" }
    for i = 1, 20 do
      pieces[#pieces + 1] = "X-Pie"
      pieces[#pieces + 1] = "ce-" .. i .. ": " .. string.rep("h", 30)
      pieces[#pieces + 1] = tostring(i) .. "\r\n"
    end
    pieces[#pieces + 1] = "\r\n"
    for _, p in ipairs(pieces) do
      assert(c:send(p))
      t.sleep(0.002)   -- each piece its own read
    end
    local res = assert(c:read_response(10))
    assert.are.same(200, res.status, res.body)
    local h = res:json()
    for i = 1, 20 do
      assert.are.same(string.rep("h", 30) .. i, h["x-piece-" .. i])
    end
    assert.are.same("x", h.host)
    -- the same connection: a short request after the long one, then the query of a long URL
    assert(c:send("GET /query?k=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    res = assert(c:read_response(10))
    assert.are.same({ k = "1" }, res:json())
    assert(c:send("GET /query?a=" .. long .. "&b=2 HTTP/1.1\r\nHost: x\r\n" ..
                  pad_headers(30, 40) .. "\r\n"))
    res = assert(c:read_response(10))
    assert.are.same({ a = long, b = "2" }, res:json())
    c:close()
  end)

  it("answers pipelined short and long requests in order on one connection", function()
    local c = t.connect(srv.port)
    local reqs, want = {}, {}
    for i = 1, 12 do
      local v = string.rep("x", i % 3 == 0 and 400 or 1) .. i
      want[i] = v
      reqs[i] = "GET /query?v=" .. v .. " HTTP/1.1\r\nHost: x\r\n"
                .. (i % 2 == 0 and pad_headers(10, 50) or "") .. "\r\n"
    end
    assert(c:send(table.concat(reqs)))
    for i = 1, 12 do
      local res = assert(c:read_response(10))
      assert.are.same({ v = want[i] }, res:json(), "request " .. i)
    end
    c:close()
  end)

  it("writes a response the kernel does not take at once to a reader that waits", function()
    local body = string.rep("0123456789abcdef", 4 * 65536)   -- 4 MiB
    local c = t.connect(srv.port)
    assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n"))
    assert(c:send(body, 20))
    t.sleep(0.3)   -- not reading: the server's first write stops short
    local res = assert(c:read_response(20))
    assert.are.same(200, res.status)
    local j = res:json()
    assert.are.same(#body, j.len)
    assert.is_true(j.body == body)
    -- the same connection goes on
    assert(c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same("plain text", assert(c:read_response(10)).body)
    c:close()
  end)

  it("keeps serving after clients leave in the middle of long responses", function()
    local body = string.rep("z", 4 * 1024 * 1024)
    for _ = 1, 3 do
      local c = t.connect(srv.port)
      assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n"))
      assert(c:send(body, 20))
      assert(c:read_head(10))
      t.sleep(0.05)
      c:reset()   -- the response is still being written
    end
    local res = assert(t.request(srv.port, "GET", "/text"))
    assert.are.same("plain text", res.body)
  end)
end)
