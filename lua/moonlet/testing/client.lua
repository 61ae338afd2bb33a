-- moonlet.testing.client: talks to a server over real sockets, from the outside.
--
--   connect(port)   a raw TCP connection (ffi sockets, non-blocking, poll() for every
--                   timeout) with an HTTP/1.x response parser that keeps unread bytes
--                   for the next response (pipelining): :send, :read_response,
--                   :read_head, :read_chunk, :recv, :read_all, :is_closed, :reset
--   request(...)    the one-shot form; concurrent(...) opens many connections at once
--   listen()        a listening socket: a fake upstream for HTTP client tests
--   parse_response / parse_request / build_request   the parsers and the builder alone
--   now(), sleep(s) monotonic time and a plain wait (poll), no event loop involved
--
-- Expected failures (refused, timeout, closed) return nil, "message"; misuse raises.
local ffi = require "ffi"
local bit = require "bit"
local cjson = require "cjson"

local C = ffi.C
local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local error, pcall, setmetatable = error, pcall, setmetatable
local concat, sort = table.concat, table.sort
local fmt, sub, find, match, gmatch = string.format, string.sub, string.find, string.match, string.gmatch
local gsub, lower, upper, byte = string.gsub, string.lower, string.upper, string.byte
local ceil, max, min = math.ceil, math.max, math.min
local bor, band, rshift = bit.bor, bit.band, bit.rshift

---@class moonlet.testing.client
local _M = { _VERSION = "0.2.0" }

-- Every C name is private (moonlet_t_*) and bound to the libc symbol with __asm__,
-- so these declarations never collide with the ones of other modules in the
-- same state (the binary's own Lua modules may declare struct pollfd too).
do
  local ok, err = pcall(ffi.cdef, [[
    struct moonlet_t_pollfd { int fd; short events; short revents; };
    struct moonlet_t_timespec { long tv_sec; long tv_nsec; };
    struct moonlet_t_rlimit { unsigned long cur; unsigned long max; };
    struct moonlet_t_sockaddr_in {
      uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8];
    };
    struct moonlet_t_linger { int onoff; int linger; };
    int moonlet_t_poll(struct moonlet_t_pollfd *fds, unsigned long n, int ms) __asm__("poll");
    int moonlet_t_clock_gettime(int clock, struct moonlet_t_timespec *ts) __asm__("clock_gettime");
    int moonlet_t_getrlimit(int res, struct moonlet_t_rlimit *rl) __asm__("getrlimit");
    int moonlet_t_setrlimit(int res, const struct moonlet_t_rlimit *rl) __asm__("setrlimit");
    const char *moonlet_t_strerror(int e) __asm__("strerror");
    int moonlet_t_socket(int domain, int type, int protocol) __asm__("socket");
    int moonlet_t_connect(int fd, const void *addr, unsigned int len) __asm__("connect");
    int moonlet_t_bind(int fd, const void *addr, unsigned int len) __asm__("bind");
    int moonlet_t_listen(int fd, int backlog) __asm__("listen");
    int moonlet_t_accept4(int fd, void *addr, unsigned int *len, int flags) __asm__("accept4");
    int moonlet_t_getsockname(int fd, void *addr, unsigned int *len) __asm__("getsockname");
    intptr_t moonlet_t_send(int fd, const void *buf, size_t n, int flags) __asm__("send");
    intptr_t moonlet_t_recv(int fd, void *buf, size_t n, int flags) __asm__("recv");
    int moonlet_t_shutdown(int fd, int how) __asm__("shutdown");
    int moonlet_t_close(int fd) __asm__("close");
    int moonlet_t_setsockopt(int fd, int level, int name, const void *val, unsigned int len) __asm__("setsockopt");
    int moonlet_t_getsockopt(int fd, int level, int name, void *val, unsigned int *len) __asm__("getsockopt");
  ]])
  -- A second load of this file (package.loaded cleared) finds them declared.
  if not ok and not find(tostring(err), "redefine", 1, true) then error(err) end
end

-- x86_64 / aarch64 Linux values.
local AF_INET, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC = 2, 1, 0x800, 0x80000
local SOL_SOCKET, SO_REUSEADDR, SO_ERROR, SO_LINGER = 1, 2, 4, 13
local IPPROTO_TCP, TCP_NODELAY, MSG_NOSIGNAL, SHUT_WR = 6, 1, 0x4000, 1
local EINTR, EAGAIN, EPIPE, ECONNRESET, EINPROGRESS = 4, 11, 32, 104, 115
local POLLIN, POLLOUT = 1, 4
local RLIMIT_NOFILE, CLOCK_MONOTONIC = 7, 1

local DEFAULT_TIMEOUT = 10
local RECV_SIZE = 65536

local timespec = ffi.new("struct moonlet_t_timespec")
local pollfd1 = ffi.new("struct moonlet_t_pollfd[1]")
local recv_buf = ffi.new("char[?]", RECV_SIZE)
local int1 = ffi.new("int[1]")
local len1 = ffi.new("unsigned int[1]")

local function errmsg(e)
  return lower(ffi.string(C.moonlet_t_strerror(e)))
end
---errmsg(errno) -> its message ("connection refused").
_M.errmsg = errmsg

-- A string as Lua source ("a\nb"), for messages; long ones are cut.
local function quote(s)
  s = tostring(s)
  local more = #s > 2000 and fmt("...(%d bytes)", #s) or ""
  return gsub(fmt("%q", sub(s, 1, 2000)), "\\\n", "\\n") .. more
end
---quote(s) -> s as Lua source ("a\nb"), for messages; long ones are cut.
_M.quote = quote

---------------------------------------------------------------------------
-- time
---------------------------------------------------------------------------

-- Monotonic seconds (float).
local function now()
  C.moonlet_t_clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end
---now() -> monotonic seconds (float).
_M.now = now

local function sleep(seconds)
  local deadline = now() + (seconds or 0)
  while true do
    local left = deadline - now()
    if left <= 0 then return end
    C.moonlet_t_poll(nil, 0, ceil(left * 1000))
  end
end
---sleep(seconds): blocks the spec.
_M.sleep = sleep

-- Lets a spawned server and concurrent() hold thousands of sockets.
local function raise_nofile(want)
  local rl = ffi.new("struct moonlet_t_rlimit")
  if C.moonlet_t_getrlimit(RLIMIT_NOFILE, rl) ~= 0 or rl.cur >= want then return end
  local hard = rl.max
  rl.cur = want
  if rl.max < want then rl.max = want end       -- only root may raise the hard limit
  if C.moonlet_t_setrlimit(RLIMIT_NOFILE, rl) ~= 0 then
    rl.cur, rl.max = hard, hard
    C.moonlet_t_setrlimit(RLIMIT_NOFILE, rl)
  end
end
---raise_nofile(want): lets a spawned server and concurrent() hold thousands of sockets.
_M.raise_nofile = raise_nofile

---------------------------------------------------------------------------
-- HTTP/1.x parsing (shared by the connection and concurrent())
---------------------------------------------------------------------------

---A response read by the spec helpers and the test client.
---@class moonlet.testing.Response
---@field status integer
---@field reason string
---@field headers table<string, string> lower-case names
---@field body string
local Response = {}
Response.__index = Response

---Decoded JSON body; raises with the body if it is not JSON.
function Response:json()
  local ok, v = pcall(cjson.decode, self.body)
  if not ok then
    error(fmt("response body is not JSON (%s): %s", tostring(v), quote(self.body)), 2)
  end
  return v
end

---Every value of a header, in order (names are case-insensitive).
---@param name string|integer
function Response:header_values(name)
  name = lower(name)
  local out = {}
  for _, h in ipairs(self.header_list) do
    if h.name == name then out[#out + 1] = h.value end
  end
  return out
end

local function bad(what, s)
  if s then return "invalid response: " .. what .. " " .. quote(sub(s, 1, 200)) end
  return "invalid response: " .. what
end

-- Header lines from head (CRLF separated, from pos up to stop) into headers/list. A
-- line is name ":" OWS value OWS, the name a token (no white space); found with plain
-- searches (a pattern per line was most of a response's parsing time).
local function parse_fields(buf, pos, stop, headers, list)
  while pos < stop do
    local e = find(buf, "\r\n", pos, true)
    if not e or e > stop then e = stop end
    local colon = find(buf, ":", pos, true)
    local name = colon and colon < e and colon > pos and sub(buf, pos, colon - 1)
    if not name or find(name, " ", 1, true) or find(name, "\t", 1, true) then
      return nil, bad("header line", sub(buf, pos, e - 1))
    end
    local vs, ve = colon + 1, e - 1
    local b = byte(buf, vs)
    while vs <= ve and (b == 32 or b == 9) do vs = vs + 1; b = byte(buf, vs) end
    b = byte(buf, ve)
    while ve >= vs and (b == 32 or b == 9) do ve = ve - 1; b = byte(buf, ve) end
    local value
    name, value = lower(name), sub(buf, vs, ve)
    list[#list + 1] = { name = name, value = value }
    local old = headers[name]
    headers[name] = old and (old .. ", " .. value) or value
    pos = e + 2
  end
  return true
end

-- Status line and headers. Returns res (no body yet) and the position of the
-- body's first byte, or nil, "incomplete", bytes_needed, or nil, "invalid ...".
local function parse_head(buf, pos)
  pos = pos or 1
  local hend = find(buf, "\r\n\r\n", pos, true)
  if not hend then
    local n = #buf - pos + 1
    local start = sub(buf, pos, pos + 4)
    if start ~= sub("HTTP/", 1, #start) then return nil, bad("start", sub(buf, pos)) end
    if n > 1048576 then return nil, bad("head larger than 1 MiB") end
    return nil, "incomplete", #buf + 1
  end
  local sl_end = find(buf, "\r\n", pos, true)
  -- HTTP/d.d SP ddd [SP reason]: checked a byte at a time (no pattern: those stop the JIT)
  local d1, dot, d2, sp1, s1, s2, s3, sp2 = byte(buf, pos + 5, pos + 12)
  local status = s1 and s3 and (s1 - 48) * 100 + (s2 - 48) * 10 + (s3 - 48)
  if sub(buf, pos, pos + 4) ~= "HTTP/" or not (d1 and d1 >= 48 and d1 <= 57) or dot ~= 46
      or not (d2 and d2 >= 48 and d2 <= 57) or sp1 ~= 32 or not status
      or not (s1 >= 48 and s1 <= 57 and s2 >= 48 and s2 <= 57 and s3 >= 48 and s3 <= 57)
      or (sl_end ~= pos + 12 and sp2 ~= 32) then
    return nil, bad("status line", sub(buf, pos, sl_end - 1))
  end
  local res = setmetatable({ status = status, reason = sub(buf, pos + 13, sl_end - 1),
                             version = sub(buf, pos, pos + 7), headers = {}, header_list = {} },
                           Response)
  local ok, err = parse_fields(buf, sl_end + 2, hend + 2, res.headers, res.header_list)
  if not ok then return nil, err end
  return res, hend + 4
end

-- How the body is delimited: "none", "chunked", "close", or "length", n.
local function framing(res, opts)
  local st = res.status
  if opts.head or st < 200 or st == 204 or st == 304 then return "none" end
  local te = res.headers["transfer-encoding"]
  if te then
    if match(lower(te), "chunked%s*$") then return "chunked" end
    return "close"
  end
  local cl = res.headers["content-length"]
  local n = cl and tonumber(cl)
  if n and n >= 0 and n % 1 == 0 and tostring(n) == cl then   -- plain digits, the usual case
    return "length", n
  end
  if cl then
    n = nil
    for v in gmatch(cl, "[^,]+") do
      v = match(v, "^%s*(.-)%s*$")
      if not match(v, "^%d+$") or (n and n ~= tonumber(v)) then return nil, bad("content-length", cl) end
      n = tonumber(v)
    end
    if not n then return nil, bad("content-length", cl) end
    return "length", n
  end
  return "close"
end

-- One chunk starting at pos: data ("" for the last chunk), position after it;
-- or nil, "incomplete", bytes_needed, or nil, "invalid ...".
local function parse_chunk(buf, pos)
  local le = find(buf, "\r\n", pos, true)
  if not le then
    if #buf - pos > 4096 then return nil, bad("chunk size line", sub(buf, pos)) end
    return nil, "incomplete", #buf + 1
  end
  local line = sub(buf, pos, le - 1)
  local hex, ext = match(line, "^(%x+)[ \t]*(.*)$")
  if not hex or (ext ~= "" and sub(ext, 1, 1) ~= ";") or #hex > 12 then
    return nil, bad("chunk size line", line)
  end
  local size = tonumber(hex, 16)
  if size == 0 then return "", le + 2 end
  local dend = le + 1 + size
  if #buf < dend + 2 then return nil, "incomplete", dend + 2 end
  if sub(buf, dend + 1, dend + 2) ~= "\r\n" then return nil, bad("chunk not followed by CRLF") end
  return sub(buf, le + 2, dend), dend + 3
end

-- Trailer fields after the last chunk, up to the empty line.
local function parse_trailers(buf, pos)
  local e = find(buf, "\r\n", pos, true)
  if e == pos then return {}, {}, pos + 2 end
  local tend = find(buf, "\r\n\r\n", pos, true)
  if not tend then return nil, "incomplete", #buf + 1 end
  local trailers, list = {}, {}
  local ok, err = parse_fields(buf, pos, tend + 2, trailers, list)
  if not ok then return nil, err end
  return trailers, list, tend + 4
end

local function parse_chunked(buf, pos)
  local chunks = {}
  while true do
    local data, npos, need = parse_chunk(buf, pos)
    if not data then return nil, npos, need end
    pos = npos
    if data == "" then break end
    chunks[#chunks + 1] = data
  end
  local trailers, list, stop = parse_trailers(buf, pos)
  if not trailers then return nil, list, stop end
  return chunks, trailers, stop
end

-- Parses one HTTP/1.x response from the start of buf.
-- opts.head: it answers a HEAD request (no body); opts.eof: the peer has closed,
-- so a body delimited by the close is complete.
-- Returns res, rest_of_buf; or nil, "incomplete", bytes_needed; or nil, "invalid response: ...".
-- res = { status, reason, version ("HTTP/1.1"), headers (lower-case names; repeated
-- ones joined with ", "), header_list ({name, value} in order), body, raw,
-- chunks and trailers (chunked only) } with res:json() and res:header_values(name).
local function parse_response(buf, opts)
  opts = opts or {}
  local res, bstart, need = parse_head(buf)
  if not res then return nil, bstart, need end
  local kind, n = framing(res, opts)
  if not kind then return nil, n end
  local stop
  if kind == "none" then
    res.body, stop = "", bstart - 1
  elseif kind == "length" then
    stop = bstart + n - 1
    if #buf < stop then return nil, "incomplete", stop end
    res.body = sub(buf, bstart, stop)
  elseif kind == "chunked" then
    local chunks, trailers, pos = parse_chunked(buf, bstart)
    if not chunks then return nil, trailers, pos end
    res.chunks, res.trailers, res.body, stop = chunks, trailers, concat(chunks), pos - 1
  else
    if not opts.eof then return nil, "incomplete", math.huge end
    res.body, stop = sub(buf, bstart), #buf
  end
  res.raw = sub(buf, 1, stop)
  return res, sub(buf, stop + 1)
end
---parse_response(text[, head]) -> res, rest: one HTTP/1.x response parsed from text.
_M.parse_response = parse_response

-- Parses one HTTP/1.x request (for fake upstreams): { method, target, path,
-- version, headers, header_list, body, raw }, rest; or nil, "incomplete" / "invalid ...".
local function parse_request(buf)
  local hend = find(buf, "\r\n\r\n", 1, true)
  if not hend then return nil, "incomplete", #buf + 1 end
  local rl_end = find(buf, "\r\n", 1, true)
  local rl = sub(buf, 1, rl_end - 1)
  local method, target, version = match(rl, "^(%u+) (%S+) (HTTP/%d%.%d)$")
  if not method then return nil, "invalid request: request line " .. quote(rl) end
  local req = { method = method, target = target, path = match(target, "^[^?]*"),
                version = version, headers = {}, header_list = {} }
  local ok, err = parse_fields(buf, rl_end + 2, hend + 2, req.headers, req.header_list)
  if not ok then return nil, (gsub(err, "^invalid response", "invalid request")) end
  local bstart, stop = hend + 4, hend + 3
  local te, cl = req.headers["transfer-encoding"], req.headers["content-length"]
  if te and match(lower(te), "chunked%s*$") then
    local chunks, trailers, pos = parse_chunked(buf, bstart)
    if not chunks then return nil, trailers, pos end
    req.body, stop = concat(chunks), pos - 1
  elseif cl then
    local n = tonumber(match(cl, "^%s*(%d+)%s*$"))
    if not n then return nil, "invalid request: content-length " .. quote(cl) end
    stop = hend + 3 + n
    if #buf < stop then return nil, "incomplete", stop end
    req.body = sub(buf, bstart, stop)
  else
    req.body = ""
  end
  req.raw = sub(buf, 1, stop)
  return req, sub(buf, stop + 1)
end
---parse_request(text) -> req, rest: one HTTP/1.x request parsed from text.
_M.parse_request = parse_request

---------------------------------------------------------------------------
-- raw TCP connections
---------------------------------------------------------------------------

---A raw client connection (t.connect, listener:accept).
---@class moonlet.testing.Conn
local Conn = {}
Conn.__index = Conn

-- Waits until fd is ready for events; returns revents, or 0 on timeout.
local function wait_fd(fd, events, timeout)
  local deadline = now() + max(timeout, 0)
  while true do
    pollfd1[0].fd, pollfd1[0].events, pollfd1[0].revents = fd, events, 0
    local rc = C.moonlet_t_poll(pollfd1, 1, max(0, ceil((deadline - now()) * 1000)))
    if rc > 0 then return pollfd1[0].revents end
    if (rc == 0 or ffi.errno() == EINTR) and now() >= deadline then return 0 end
    if rc < 0 and ffi.errno() ~= EINTR then return 0 end
  end
end

local function so_error(fd)
  int1[0], len1[0] = 0, 4
  if C.moonlet_t_getsockopt(fd, SOL_SOCKET, SO_ERROR, int1, len1) ~= 0 then return ffi.errno() end
  return int1[0]
end

local function set_int_opt(fd, level, name, value)
  int1[0] = value
  return C.moonlet_t_setsockopt(fd, level, name, int1, 4)
end

local function sockaddr(host, port)
  host = host or "127.0.0.1"
  if host == "localhost" then host = "127.0.0.1" end
  local sa = ffi.new("struct moonlet_t_sockaddr_in")
  sa.family = AF_INET
  sa.port = bor(rshift(port, 8), band(port, 0xff) * 256)        -- htons
  local a, b, c, d = match(host, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then error("not an IPv4 address: " .. tostring(host), 3) end
  sa.addr[0], sa.addr[1], sa.addr[2], sa.addr[3] = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  return sa
end

local function close_holder(h)
  if h[0] >= 0 then C.moonlet_t_close(h[0]); h[0] = -1 end
end

local function wrap_fd(fd, port, host)
  local holder = ffi.gc(ffi.new("int[1]", fd), close_holder)   -- closed on GC if forgotten
  return setmetatable({ fd = fd, _h = holder, buf = "", eof = false, port = port, host = host }, Conn)
end

local function new_socket()
  local fd = C.moonlet_t_socket(AF_INET, bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
  if fd < 0 then return nil, errmsg(ffi.errno()) end
  return fd
end

---Connects to host:port (default 127.0.0.1). Returns a connection, or nil, err
---("connection refused", "timeout", ...).
---@param port integer
---@param host string?
---@param timeout number?
function _M.connect(port, host, timeout)
  port = tonumber(port) or error("connect: bad port " .. tostring(port), 2)
  host = host or "127.0.0.1"
  local sa = sockaddr(host, port)
  local fd, err = new_socket()
  if not fd then return nil, err end
  if C.moonlet_t_connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    local e = ffi.errno()
    if e ~= EINPROGRESS and e ~= EINTR then C.moonlet_t_close(fd); return nil, errmsg(e) end
    if wait_fd(fd, POLLOUT, timeout or DEFAULT_TIMEOUT) == 0 then
      C.moonlet_t_close(fd)
      return nil, "timeout"
    end
    e = so_error(fd)
    if e ~= 0 then C.moonlet_t_close(fd); return nil, errmsg(e) end
  end
  set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1)   -- each send() leaves at once: split-request tests
  return wrap_fd(fd, port, host)
end

---Sends all of data. Returns true, or nil, "closed" / "timeout" / err.
---@param data string?
---@param timeout number?
function Conn:send(data, timeout)
  if self._h[0] < 0 then return nil, "closed" end
  data = tostring(data)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  local p, len, off = ffi.cast("const char *", data), #data, 0
  while off < len do
    local n = tonumber(C.moonlet_t_send(self.fd, p + off, len - off, MSG_NOSIGNAL))
    if n >= 0 then
      off = off + n
    else
      local e = ffi.errno()
      if e == EAGAIN then
        if now() >= deadline then return nil, "timeout" end
        wait_fd(self.fd, POLLOUT, deadline - now())
      elseif e == EPIPE or e == ECONNRESET then
        return nil, "closed"
      elseif e ~= EINTR then
        return nil, errmsg(e)
      end
    end
  end
  return true
end

-- Some bytes straight from the socket: data, or nil, "timeout" / "closed".
local function recv_some(self, timeout)
  if self._h[0] < 0 or self.eof then return nil, "closed" end
  local deadline = now() + timeout
  while true do
    local n = tonumber(C.moonlet_t_recv(self.fd, recv_buf, RECV_SIZE, 0))
    if n > 0 then return ffi.string(recv_buf, n) end
    if n == 0 then self.eof = true; return nil, "closed" end
    local e = ffi.errno()
    if e == ECONNRESET then self.eof, self.reset = true, true; return nil, "closed" end
    if e == EAGAIN then
      local left = deadline - now()
      if left <= 0 then return nil, "timeout" end
      wait_fd(self.fd, POLLIN, left)
    elseif e ~= EINTR then
      return nil, errmsg(e)
    end
  end
end

---Buffered bytes first, else whatever arrives: data, or nil, "timeout" / "closed".
---@param timeout number?
function Conn:recv(timeout)
  if self.buf ~= "" then
    local data = self.buf
    self.buf = ""
    return data
  end
  return recv_some(self, timeout or DEFAULT_TIMEOUT)
end

-- Reads until parse(buf) gives a result; bytes after it stay buffered.
local function read_parsed(self, timeout, parse, popts)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  local pending, plen, need = {}, #self.buf, 0
  while true do
    if #pending > 0 and (plen >= need or self.eof) then
      self.buf = self.buf .. concat(pending)
      pending = {}
    end
    if #pending == 0 then
      if self.eof then popts.eof = true end
      local res, rest, n = parse(self.buf, popts)
      if res then self.buf = rest; return res end
      if rest ~= "incomplete" then return nil, rest end
      if self.eof then
        if self.buf == "" then return nil, "closed" end
        return nil, fmt("closed after %d bytes of an incomplete message", #self.buf)
      end
      need = n or 0
    end
    local data, err = recv_some(self, deadline - now())
    if data then
      pending[#pending + 1] = data
      plen = plen + #data
    elseif err == "timeout" then
      self.buf = self.buf .. concat(pending)
      return nil, "timeout"
    elseif err ~= "closed" then
      self.buf = self.buf .. concat(pending)
      return nil, err
    end
  end
end

---Exactly one response (pipelining-safe). read_response(timeout[, opts]) or
---read_response(opts) with opts.timeout; opts.head = true for a HEAD request.
---Returns res, or nil, "timeout" / "closed" / "invalid response: ...".
---@param timeout number?
---@param opts table?
function Conn:read_response(timeout, opts)
  if type(timeout) == "table" then timeout, opts = timeout.timeout, timeout end
  opts = opts or {}
  return read_parsed(self, timeout, parse_response, { head = opts.head })
end

---Only the status line and headers; the body stays buffered (read it with
---:read_chunk(), :recv() or :read_all()). Returns res without body.
---@param timeout number?
function Conn:read_head(timeout)
  return read_parsed(self, timeout, function(buf)
    local res, pos, need = parse_head(buf)
    if not res then return nil, pos, need end
    res.raw = sub(buf, 1, pos - 1)
    return res, sub(buf, pos)
  end, {})
end

---The next chunk of a chunked body after :read_head(): its data, or "" for the
---last chunk (trailers consumed); nil, err otherwise. For streaming / SSE tests.
---@param timeout number?
function Conn:read_chunk(timeout)
  return read_parsed(self, timeout, function(buf)
    local data, pos, need = parse_chunk(buf, 1)
    if not data then return nil, pos, need end
    if data == "" then
      local trailers, list, stop = parse_trailers(buf, pos)
      if not trailers then return nil, list, stop end
      pos = stop
    end
    return data, sub(buf, pos)
  end, {})
end

---One request (for fake upstreams built with listen()).
---@param timeout number?
function Conn:read_request(timeout)
  return read_parsed(self, timeout, parse_request, {})
end

---Everything until the peer closes: data, or nil, "timeout", data_so_far.
---@param timeout number?
function Conn:read_all(timeout)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  local parts = { self.buf }
  self.buf = ""
  while true do
    local data, err = recv_some(self, deadline - now())
    if data then
      parts[#parts + 1] = data
    elseif err == "closed" then
      return concat(parts)
    else
      return nil, err, concat(parts)
    end
  end
end

---True if the peer closes (EOF or reset) within timeout (default 5 s), false
---if not. Data arriving meanwhile is kept buffered.
---@param timeout number?
function Conn:is_closed(timeout)
  local deadline = now() + (timeout or 5)
  while true do
    if self.eof then return true end
    local data, err = recv_some(self, deadline - now())
    if data then
      self.buf = self.buf .. data
    elseif err == "closed" then
      return true
    elseif err == "timeout" then
      return false
    else
      return nil, err
    end
  end
end

---Half-close: no more sending (the peer sees EOF), reading still works.
function Conn:shutdown()
  if self._h[0] >= 0 then C.moonlet_t_shutdown(self.fd, SHUT_WR) end
  return true
end

---Closes with a TCP RST instead of a FIN (an abruptly vanished client).
function Conn:reset()
  if self._h[0] >= 0 then
    local l = ffi.new("struct moonlet_t_linger", 1, 0)
    C.moonlet_t_setsockopt(self.fd, SOL_SOCKET, SO_LINGER, l, ffi.sizeof(l))
  end
  return self:close()
end

---Closes the connection.
function Conn:close()
  close_holder(self._h)
  return true
end

-- A listening socket on 127.0.0.1 (port 0 = any free port): a fake upstream for
-- tests of moonlet's HTTP client. listener.port, listener:accept(timeout) → conn
-- or nil, "timeout"; listener:close().
---A listening socket for fake upstreams (t.listen).
---@class moonlet.testing.Listener
local Listener = {}
Listener.__index = Listener

---t.listen([port[, host]]) -> a listener (a fake upstream), or nil, err.
---@return moonlet.testing.Listener|nil
---@return string? err
---@param port integer
---@param host string?
function _M.listen(port, host)
  host = host or "127.0.0.1"
  local sa = sockaddr(host, port or 0)
  local fd, err = new_socket()
  if not fd then return nil, err end
  local l = setmetatable({ fd = fd, _h = ffi.gc(ffi.new("int[1]", fd), close_holder), host = host }, Listener)
  set_int_opt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
  if C.moonlet_t_bind(fd, sa, ffi.sizeof(sa)) ~= 0 or C.moonlet_t_listen(fd, 1024) ~= 0 then
    err = errmsg(ffi.errno())
    l:close()
    return nil, err
  end
  len1[0] = ffi.sizeof(sa)
  C.moonlet_t_getsockname(fd, sa, len1)
  l.port = bor(rshift(sa.port, 8), band(sa.port, 0xff) * 256)
  return l
end

---Waits for a connection: conn, or nil, err.
---@return moonlet.testing.Conn|nil
---@return string? err
---@param timeout number?
function Listener:accept(timeout)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local fd = C.moonlet_t_accept4(self.fd, nil, nil, bor(SOCK_NONBLOCK, SOCK_CLOEXEC))
    if fd >= 0 then
      set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
      return wrap_fd(fd, self.port, self.host)
    end
    local e = ffi.errno()
    if e ~= EAGAIN and e ~= EINTR then return nil, errmsg(e) end
    local left = deadline - now()
    if left <= 0 then return nil, "timeout" end
    wait_fd(self.fd, POLLIN, left)
  end
end

---Stops listening.
function Listener:close()
  close_holder(self._h)
  return true
end

---A port on 127.0.0.1 that was free a moment ago (for a server that must be given one).
function _M.free_port()
  local l = assert(_M.listen(0))
  local port = l.port
  l:close()
  return port
end

-- Appends "Name: value" lines for headers (name → value or list of values, a list
-- repeating the name) to lines, names sorted; returns the set of the lower-case names.
local function header_lines(lines, headers)
  local have, names = {}, {}
  for k in pairs(headers or {}) do names[#names + 1] = k end
  sort(names)
  for _, k in ipairs(names) do
    local v = headers[k]
    have[lower(k)] = true
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
  return have
end
---header_lines(lines, headers) -> have: the header lines of a request appended to lines.
_M.header_lines = header_lines

local function build_request(port, method, path, opts)
  local lines = { fmt("%s %s HTTP/1.1", method, path) }
  local have = header_lines(lines, opts.headers)
  if not have.host then lines[#lines + 1] = fmt("Host: %s:%d", opts.host or "127.0.0.1", port) end
  if opts.body and not have["content-length"] and not have["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #opts.body
  end
  if not have.connection then lines[#lines + 1] = "Connection: close" end
  return concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")
end
---build_request(port, method, path, opts) -> the raw bytes of a request.
_M.build_request = build_request

---One request on a fresh connection (Connection: close).
---opts: headers (name → value or list of values), body, host, timeout.
---Returns res, or nil, err.
---@param port integer
---@param method string
---@param path string
---@param opts table?
function _M.request(port, method, path, opts)
  opts = opts or {}
  method = upper(method or "GET")
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local conn, err = _M.connect(port, opts.host, timeout)
  if not conn then return nil, err end
  local ok, serr = conn:send(build_request(port, method, path or "/", opts), timeout)
  -- A server may answer (413, 400) and close before taking the whole body.
  if not ok and serr ~= "closed" then conn:close(); return nil, serr end
  local res, rerr = conn:read_response(timeout, { head = method == "HEAD" })
  conn:close()
  return res, rerr
end

---Opens n connections at once, sends raw_request on each and waits (one poll()
---over all of them) until each has a complete response or timeout (default 30 s)
---passes. Returns { ok = complete 2xx responses, statuses = {status → count},
---errors = failed or timed-out connections, timeouts = how many of those timed
---out, error_kinds = {message → count}, elapsed = seconds }.
---@param port integer
---@param n integer?
---@param raw_request string?
---@param timeout number?
function _M.concurrent(port, n, raw_request, timeout)
  n, timeout = n or 1, timeout or 30
  raw_request = raw_request or "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
  raise_nofile(n + 256)
  local popts = { head = match(raw_request, "^HEAD ") ~= nil }
  local popts_eof = { head = popts.head, eof = true }
  local rlen, rptr = #raw_request, ffi.cast("const char *", raw_request)
  local sa = sockaddr("127.0.0.1", tonumber(port))
  local result = { ok = 0, statuses = {}, errors = 0, timeouts = 0, error_kinds = {} }
  local conns, active = {}, 0

  local function fail(c, why)
    result.errors = result.errors + 1
    result.error_kinds[why] = (result.error_kinds[why] or 0) + 1
    if c then C.moonlet_t_close(c.fd); c.state = nil; active = active - 1 end
  end

  local function step(c)
    if c.state == "connect" then
      local e = so_error(c.fd)
      if e ~= 0 then return fail(c, errmsg(e)) end
      c.state = "send"
    end
    if c.state == "send" then
      while c.sent < rlen do
        local k = tonumber(C.moonlet_t_send(c.fd, rptr + c.sent, rlen - c.sent, MSG_NOSIGNAL))
        if k < 0 then
          local e = ffi.errno()
          if e == EAGAIN then return end
          if e ~= EINTR then return fail(c, e == EPIPE and "closed" or errmsg(e)) end
        else
          c.sent = c.sent + k
        end
      end
      c.state = "read"
      return
    end
    local eof = false
    while true do
      local k = tonumber(C.moonlet_t_recv(c.fd, recv_buf, RECV_SIZE, 0))
      if k > 0 then
        c.buf = c.buf .. ffi.string(recv_buf, k)
      elseif k == 0 then
        eof = true
        break
      else
        local e = ffi.errno()
        if e == ECONNRESET then eof = true; break end
        if e == EAGAIN then break end
        if e ~= EINTR then return fail(c, errmsg(e)) end
      end
    end
    local res, err = parse_response(c.buf, eof and popts_eof or popts)
    if res then
      result.statuses[res.status] = (result.statuses[res.status] or 0) + 1
      if res.status >= 200 and res.status < 300 then result.ok = result.ok + 1 end
      C.moonlet_t_close(c.fd)
      c.state = nil
      active = active - 1
    elseif err ~= "incomplete" then
      fail(c, err)
    elseif eof then
      fail(c, c.buf == "" and "closed without a response" or "closed mid-response")
    end
  end

  local t0 = now()
  local ok, err = pcall(function()
    for _ = 1, n do
      local fd, serr = new_socket()
      if not fd then
        fail(nil, serr)
      elseif C.moonlet_t_connect(fd, sa, ffi.sizeof(sa)) ~= 0 and ffi.errno() ~= EINPROGRESS then
        local e = ffi.errno()
        C.moonlet_t_close(fd)
        fail(nil, errmsg(e))
      else
        conns[#conns + 1] = { fd = fd, state = "connect", sent = 0, buf = "" }
        active = active + 1
      end
    end
    local pfds = ffi.new("struct moonlet_t_pollfd[?]", max(#conns, 1))
    local deadline = t0 + timeout
    local idx = {}
    while active > 0 do
      local left = deadline - now()
      if left <= 0 then break end
      local m = 0
      for _, c in ipairs(conns) do
        if c.state then
          pfds[m].fd, pfds[m].revents = c.fd, 0
          pfds[m].events = c.state == "read" and POLLIN or POLLOUT
          m = m + 1
          idx[m] = c
        end
      end
      if C.moonlet_t_poll(pfds, m, ceil(min(left, 1) * 1000)) > 0 then
        for j = 0, m - 1 do
          if pfds[j].revents ~= 0 then step(idx[j + 1]) end
        end
      end
    end
  end)
  for _, c in ipairs(conns) do
    if c.state then
      result.timeouts = result.timeouts + 1
      fail(c, "timeout")
    end
  end
  result.elapsed = now() - t0
  if not ok then error(err, 0) end
  return result
end

return _M
