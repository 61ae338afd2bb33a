-- The HTTP/1.1 engine over raw sockets: keep-alive, pipelining, bodies, limits, bad input.
local t = require "moonlet.testing"

describe("http/1.1", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/basic",
                    args = { "--max-body", "1000", "--header-timeout", "1",
                             "--keepalive-timeout", "1" } }
  end)
  lazy_teardown(function() srv:stop() end)

  local function raw(bytes)
    local c = t.connect(srv.port)
    assert(c:send(bytes))
    return c
  end

  it("sends Date, Server and Content-Length on every response", function()
    local res = assert(t.request(srv.port, "GET", "/text"))
    assert.are.same("moonlet", res.headers["server"])
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", res.headers["date"])
    assert.are.same("10", res.headers["content-length"])
  end)

  it("keeps a connection alive across requests", function()
    local c = t.connect(srv.port)
    for i = 1, 5 do
      c:send("GET /users/u" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(c:read_response(5))
      assert.are.same({ user = "u" .. i }, res:json())
      assert.are.same(nil, res.headers["connection"])
    end
    c:close()
  end)

  it("answers pipelined requests in order", function()
    local reqs = {}
    for i = 1, 20 do reqs[i] = "GET /users/p" .. i .. " HTTP/1.1\r\nHost: x\r\n\r\n" end
    local c = raw(table.concat(reqs))
    for i = 1, 20 do
      assert.are.same({ user = "p" .. i }, assert(c:read_response(5)):json())
    end
    c:close()
  end)

  it("keeps order when a pipelined request sleeps", function()
    local c = raw("GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n" ..
                  "GET /text HTTP/1.1\r\nHost: x\r\n\r\n" ..
                  "GET /sleep?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same(0.2, assert(c:read_response(5)):json().slept)
    assert.are.same("plain text", assert(c:read_response(5)).body)
    assert.are.same(0.05, assert(c:read_response(5)):json().slept)
    c:close()
  end)

  it("reads Content-Length bodies", function()
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
    assert.are.same({ body = "hello world", len = 11 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("reads chunked bodies, whatever the case and spacing of Transfer-Encoding", function()
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                  "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n" ..
                  "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  , Chunked \r\n\r\n" ..
                  "2\r\nhi\r\n0\r\n\r\n")
    assert.are.same({ body = "hello world", len = 11 }, assert(c:read_response(5)):json())
    assert.are.same({ body = "hi", len = 2 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("reads a body that arrives in pieces", function()
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    t.sleep(0.05)
    c:send("defg")
    t.sleep(0.05)
    c:send("hij")
    assert.are.same({ body = "abcdefghij", len = 10 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("speaks HTTP/1.0: closes after the response unless keep-alive is asked", function()
    local c = raw("GET /text HTTP/1.0\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.are.same(200, res.status)
    assert.are.same("close", res.headers["connection"])
    assert.is_truthy(c:is_closed(2), "HTTP/1.0 connection left open")
    c = raw("GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    c:send("GET /text HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    c:close()
  end)

  it("honours Connection: close", function()
    local c = raw("GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.are.same("close", res.headers["connection"])
    assert.is_truthy(c:is_closed(2), "connection left open after Connection: close")
  end)

  it("sends 100 Continue for Expect: 100-continue", function()
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    local interim = assert(c:read_response(5))
    assert.are.same(100, interim.status)
    c:send("ping")
    assert.are.same({ body = "ping", len = 4 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("answers 413 to an announced oversized body without reading it", function()
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.are.same(413, res.status)
    assert.is_truthy(c:is_closed(5), "connection left open after 413")
  end)

  it("answers 413 when chunks exceed --max-body", function()
    local chunk = string.rep("a", 600)
    local c = raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                  "258\r\n" .. chunk .. "\r\n258\r\n" .. chunk .. "\r\n0\r\n\r\n")
    assert.are.same(413, assert(c:read_response(5)).status)
    assert.is_truthy(c:is_closed(5))
  end)

  it("answers 431 to a header block over 16 KiB", function()
    local c = raw("GET /text HTTP/1.1\r\nHost: x\r\nX-Big: " .. string.rep("b", 17000) .. "\r\n\r\n")
    assert.are.same(431, assert(c:read_response(5)).status)
    assert.is_truthy(c:is_closed(5))
  end)

  local malformed = {
    { "garbage request line", "HELLO\r\n\r\n" },
    { "a version of two digits", "GET / HTTP/10.0\r\nHost: x\r\n\r\n" },
    { "a version without minor", "GET / HTTP/1\r\nHost: x\r\n\r\n" },
    { "space in header name", "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n" },
    { "Content-Length and Transfer-Encoding",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
    { "duplicate Content-Length",
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" },
    { "negative Content-Length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n" },
    { "bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" },
    { "bare LF in header value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n" },
    { "NUL in the request line", "GET /\0 HTTP/1.1\r\n\r\n" },
  }
  for _, case in ipairs(malformed) do
    it("answers 400 and closes on " .. case[1], function()
      local c = raw(case[2])
      local res = assert(c:read_response(5))
      assert.are.same(400, res.status)
      assert.are.same("close", res.headers["connection"])
      assert.is_truthy(c:is_closed(5), "connection left open")
    end)
  end

  -- Requests RFC 9112 / 9110 say to refuse: status, then the connection is closed.
  local refused = {
    { 400, "an HTTP/1.1 request without Host", "GET /text HTTP/1.1\r\n\r\n" },
    { 400, "two Host headers", "GET /headers HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
    { 400, "two Host headers on HTTP/1.0", "GET /text HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n" },
    { 400, "a space in Host", "GET /text HTTP/1.1\r\nHost: local host\r\n\r\n" },
    { 400, "userinfo in Host", "GET /text HTTP/1.1\r\nHost: user@example.com\r\n\r\n" },
    { 400, "a path in Host", "GET /text HTTP/1.1\r\nHost: example.com/x\r\n\r\n" },
    { 400, "a bad port in Host", "GET /text HTTP/1.1\r\nHost: example.com:8o\r\n\r\n" },
    { 400, "an unclosed IPv6 literal in Host", "GET /text HTTP/1.1\r\nHost: [::1\r\n\r\n" },
    { 400, "a control character in Host", "GET /text HTTP/1.1\r\nHost: a\1b\r\n\r\n" },
    { 501, "Transfer-Encoding: gzip, chunked",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n" },
    { 501, "Transfer-Encoding: gzip then Transfer-Encoding: chunked",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "1\r\na\r\n0\r\n\r\n" },
    { 400, "Transfer-Encoding: chunked twice",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "1\r\na\r\n0\r\n\r\n" },
    { 400, "Transfer-Encoding: chunked, gzip (chunked not last)",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n1\r\na\r\n0\r\n\r\n" },
    { 400, "Transfer-Encoding: gzip (no chunked)",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc" },
    { 413, "chunk extensions adding up past --max-body",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      string.rep("1;" .. string.rep("e", 300) .. "\r\nZ\r\n", 4) .. "0\r\n\r\n" },
    { 431, "trailers past 16 KiB",
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "1\r\nZ\r\n0\r\nX-T: " .. string.rep("t", 17000) .. "\r\n\r\n" },
    { 431, "trailers that take the header block past 16 KiB",
      "POST /echo HTTP/1.1\r\nHost: x\r\nX-H: " .. string.rep("h", 9000) ..
      "\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\n0\r\nX-T: " .. string.rep("t", 9000) .. "\r\n\r\n" },
    { 400, "GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n" },
    { 400, "POST *", "POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" },
    { 505, "HTTP/2.0", "GET /text HTTP/2.0\r\nHost: x\r\n\r\n" },
    { 505, "HTTP/3.0", "GET /text HTTP/3.0\r\nHost: x\r\n\r\n" },
    { 505, "HTTP/9.9", "GET /text HTTP/9.9\r\nHost: x\r\n\r\n" },
    { 505, "HTTP/0.9", "GET /text HTTP/0.9\r\nHost: x\r\n\r\n" },
    { 505, "the HTTP/2 connection preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" },
  }
  for _, case in ipairs(refused) do
    it("answers " .. case[1] .. " and closes on " .. case[2], function()
      local c = raw(case[3])
      local res = assert(c:read_response(5))
      assert.are.same(case[1], res.status)
      assert.are.same("close", res.headers["connection"])
      assert.is_truthy(res:json().detail, "no detail")
      assert.is_truthy(c:is_closed(5), "connection left open")
    end)
  end

  it("takes OPTIONS * as a request like any other, the connection kept", function()
    local c = raw("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.is_truthy(res.status ~= 400, "OPTIONS * refused")
    assert.are.same(nil, res.headers["connection"])
    assert.are.same("plain text", assert(c:read_response(5)).body)
    c:close()
  end)

  it("serves HTTP/1.2 to 1.9 as HTTP/1.1: kept alive, Host required", function()
    local c = raw("GET /text HTTP/1.2\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.are.same(200, res.status)
    assert.are.same(nil, res.headers["connection"])
    c:send("POST /echo HTTP/1.9\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert.are.same({ body = "hi", len = 2 }, assert(c:read_response(5)):json())
    c:send("GET /text HTTP/1.2\r\n\r\n")
    assert.are.same(400, assert(c:read_response(5)).status)
    assert.is_truthy(c:is_closed(5))
  end)

  it("accepts every Host form of RFC 3986, and HTTP/1.0 without Host", function()
    local hosts = { "example.com", "example.com:8080", "127.0.0.1:1", "[::1]", "[::1]:80",
                    "[2001:db8::7]", "[v1.fe80::a+en1]", "xn--bcher-kva.example", "a%20b",
                    "a-b_c~d!$&'()*+,;=", "", "example.com:" }
    for _, host in ipairs(hosts) do
      local c = raw("GET /text HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n")
      local res = assert(c:read_response(5))
      assert.are.same(200, res.status, "Host: " .. host)
      c:close()
    end
    local c = raw("GET /text HTTP/1.0\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    c:close()
  end)

  it("answers requests sent before a malformed one, then closes", function()
    local c = raw("GET /text HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    assert.are.same(400, assert(c:read_response(5)).status)
    assert.is_truthy(c:is_closed(5))
  end)

  it("disconnects a client that sends its headers too slowly", function()
    local c = raw("GET /text HTTP/1.1\r\n")
    c:send("X-A: 1\r\n")
    local t0 = t.now()
    assert.is_truthy(c:is_closed(5), "slow client not disconnected")
    assert.is_truthy(t.now() - t0 < 4, "took too long to disconnect a slow client")
  end)

  -- The listener has TCP_DEFER_ACCEPT: the kernel hands over a silent connection after
  -- its first SYN-ACK retransmission (about 1 s), and the header timeout starts then.
  it("disconnects a client that connects and sends nothing, a second later than the header timeout", function()
    local c = t.connect(srv.port)
    local t0 = t.now()
    assert.is_truthy(c:is_closed(6), "silent client not disconnected")
    local took = t.now() - t0
    assert.is_truthy(took > 1.7 and took < 4, "silent client disconnected after " .. took .. " s")
  end)

  it("serves a client that says nothing for longer than the deferred accept", function()
    local c = t.connect(srv.port)
    t.sleep(1.4)   -- accepted without a byte by now; its header timeout runs
    assert(c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same("plain text", assert(c:read_response(5)).body)
    c:close()
  end)

  it("disconnects a client that idles on keep-alive", function()
    local c = raw("GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    assert.is_truthy(c:is_closed(5), "idle keep-alive connection left open")
  end)

  it("survives random bytes and still serves", function()
    math.randomseed(42)
    for _ = 1, 30 do
      local n = math.random(1, 300)
      local b = {}
      for i = 1, n do b[i] = string.char(math.random(0, 255)) end
      local c = raw(table.concat(b))
      c:is_closed(2)
      c:close()
    end
    assert.are.same(200, assert(t.request(srv.port, "GET", "/text")).status)
  end)

  it("parses an {id:int} segment by itself, whatever follows it in the request", function()
    local c = raw("DELETE /items/123 HTTP/1.1\r\n456: x\r\nHost: x\r\n\r\n")
    assert.are.same({ deleted = 123 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("never merges chunked trailers into the headers", function()
    local c = raw("POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                  "1\r\na\r\n0\r\nX-Injected: 1\r\nHost: evil\r\n\r\n")
    local h = assert(c:read_response(5)):json()
    assert.are.same(nil, h["x-injected"])
    assert.are.same("x", h.host)
    c:close()
  end)

  it("survives clients that reset right after Expect: 100-continue", function()
    for _ = 1, 20 do
      local c = raw("POST /slow-echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" ..
                    "Content-Length: 1\r\n\r\nx")
      c:reset()
    end
    t.sleep(0.2)   -- past the handlers' sleeps: nothing may touch the closed connections
    assert.are.same({ body = "ok" },
                    assert(t.request(srv.port, "POST", "/slow-echo", { body = "ok" })):json())
  end)

  it("keeps memory bounded when pipelined responses are not read", function()
    local reqs = string.rep("GET /big?n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n", 300)
    local c = raw(reqs)   -- 300 MB of responses asked for, none read yet
    t.sleep(1)
    local rss = srv:rss_kb()
    assert.is_truthy(rss < 150 * 1024, "server RSS grew to " .. rss .. " kB")
    c:close()
  end)

  -- each response fills the socket: the next request waits in the connection's pending
  -- bytes until the write ends, request after request (the third was left there, its
  -- client waiting until the keep-alive timeout closed the connection)
  it("answers pipelined requests whose responses each fill the socket", function()
    local c = raw(string.rep("GET /big?n=2000000 HTTP/1.1\r\nHost: x\r\n\r\n", 5))
    t.sleep(0.5)   -- not read yet: the first response's write waits
    for i = 1, 5 do
      local res = c:read_response(5)
      assert(res, "response " .. i .. " of 5 never came")
      assert.are.same(2000000, #res.body)
    end
    c:close()
  end)

  it("closes lingering connections at the client's EOF, not seconds later", function()
    local before = srv:fd_count()
    for _ = 1, 30 do
      local c = raw("GET /text HTTP/1.0\r\n\r\n")
      assert(c:read_response(5))
      c:close()
    end
    t.sleep(0.3)
    local open = srv:fd_count() - before
    assert.is_truthy(open <= 2, "connections still open: " .. open)
  end)

  it("drops a client that stops reading a large response", function()
    local c = raw("GET /big?n=30000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    srv:wait_log("the client stopped reading its response", 6)
    c:close()
  end)

  it("writes large responses completely", function()
    local res = assert(t.request(srv.port, "GET", "/big?n=3000000", { timeout = 10 }))
    assert.are.same(3000000, #res.body)
  end)
end)

-- With the default --max-body (1 MiB), only the cap per chunk line holds extensions back.
describe("http/1.1 chunk extensions and trailers", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/basic" } end)
  lazy_teardown(function() srv:stop() end)

  local function chunked_echo(chunks, trailers)
    local c = t.connect(srv.port)
    assert(c:send("POST /echo HTTP/1.1\r\nHost: x\r\nX-H: " .. string.rep("h", 8000) ..
                  "\r\nTransfer-Encoding: chunked\r\n\r\n" .. chunks .. "0\r\n" .. trailers .. "\r\n"))
    return c, assert(c:read_response(5))
  end

  it("takes extensions up to 4 KiB per chunk line and trailers within the header limit", function()
    local c, res = chunked_echo("1;a=" .. string.rep("x", 4000) .. "\r\nZ\r\n" ..
                                "2;b=" .. string.rep("y", 4000) .. "\r\nYZ\r\n",
                                "X-T: " .. string.rep("t", 7000) .. "\r\n")
    assert.are.same({ body = "ZYZ", len = 3 }, res:json())
    c:close()
  end)

  it("answers 413 and closes on a chunk line with more than 4 KiB of extensions", function()
    local c, res = chunked_echo("1;" .. string.rep("x", 2000) .. ";b=" .. string.rep("y", 2100) ..
                                "\r\nZ\r\n", "")
    assert.are.same(413, res.status)
    assert.are.same("close", res.headers["connection"])
    assert.is_truthy(c:is_closed(5), "connection left open")
  end)
end)

-- The server's own end of a connection, looked at from outside: its socket found through
-- /proc (the connection's ports -> its inode -> the server's descriptor) and copied into
-- this process with pidfd_getfd (Linux 5.6; root, or the same user without Yama's ptrace
-- restrictions) for getsockopt.
describe("accepted sockets", function()
  local ffi = require "ffi"
  local bit = require "bit"
  pcall(ffi.cdef, [[
    struct moonlet_spec_sin { unsigned short family; unsigned short port; unsigned char addr[4];
                              unsigned char zero[8]; };
    long moonlet_spec_syscall(long n, ...) __asm__("syscall");
    int moonlet_spec_getsockname(int fd, void *addr, unsigned int *len) __asm__("getsockname");
    int moonlet_spec_getsockopt(int fd, int level, int name, void *val, unsigned int *len) __asm__("getsockopt");
    int moonlet_spec_close(int fd) __asm__("close");
  ]])
  local C = ffi.C
  local SYS_pidfd_open, SYS_pidfd_getfd = 434, 438   -- the same on every Linux architecture
  local IPPROTO_TCP, TCP_NODELAY = 6, 1

  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/basic" } end)
  lazy_teardown(function() srv:stop() end)

  local function local_port(c)
    local sa = ffi.new("struct moonlet_spec_sin")
    local len = ffi.new("unsigned int[1]", ffi.sizeof(sa))
    assert(C.moonlet_spec_getsockname(c.fd, sa, len) == 0, "getsockname failed")
    return bit.bor(bit.lshift(bit.band(sa.port, 0xff), 8), bit.rshift(sa.port, 8))   -- ntohs
  end

  -- the descriptor, in the server's process, of its end of the connection c
  local function server_fd(c)
    local want = string.format("0100007F:%04X 0100007F:%04X", srv.port, local_port(c))
    local inode
    for line in io.lines("/proc/net/tcp") do
      local addrs, ino = line:match("^%s*%d+: (%x+:%x+ %x+:%x+) %x+%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
      if addrs == want then inode = ino end
    end
    assert(inode, "the server's end of the connection is not in /proc/net/tcp")
    local p = io.popen("ls -l /proc/" .. srv.pid .. "/fd")
    local fd
    for line in p:lines() do
      local n, ino = line:match(" (%d+) %-> socket:%[(%d+)%]$")
      if ino == inode then fd = tonumber(n) end
    end
    p:close()
    return assert(fd, "no descriptor of the server holds socket " .. inode)
  end

  local function server_int_opt(c, level, name)
    local pidfd = tonumber(C.moonlet_spec_syscall(SYS_pidfd_open, ffi.cast("int", srv.pid),
                                                  ffi.cast("unsigned int", 0)))
    assert(pidfd >= 0, "pidfd_open failed: errno " .. ffi.errno())
    local fd = tonumber(C.moonlet_spec_syscall(SYS_pidfd_getfd, ffi.cast("int", pidfd),
                                               ffi.cast("int", server_fd(c)),
                                               ffi.cast("unsigned int", 0)))
    local e = ffi.errno()
    C.moonlet_spec_close(pidfd)
    assert(fd >= 0, "pidfd_getfd failed: errno " .. e)
    local v, len = ffi.new("int[1]"), ffi.new("unsigned int[1]", 4)
    local rc = C.moonlet_spec_getsockopt(fd, level, name, v, len)
    C.moonlet_spec_close(fd)
    assert(rc == 0, "getsockopt failed")
    return v[0]
  end

  it("have TCP_NODELAY, inherited from their listener", function()
    local c = t.connect(srv.port)
    assert(c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same(200, assert(c:read_response(5)).status)   -- accepted by now
    assert.are_not.same(0, server_int_opt(c, IPPROTO_TCP, TCP_NODELAY))
    c:close()
  end)
end)
