-- moonlet.testing: the spec runner behind `moonlet test`, and the tools specs use
-- to drive the real binary from the outside.
--
--   runner      main(paths) loads *_spec.lua files into a fresh environment with
--               describe / it / before_all / after_all / before_each / after_each
--               and the assertions eq / ok / match / near / raises; it prints one
--               line per test and ends with exactly "N passed, N failed".
--   processes   server{...} / start{...} / run(argv): the binary runs in the
--               background through /bin/sh; its pid, stdout, stderr and exit
--               status land in files of a private temp dir, which we poll.
--   client      connect(port) gives a raw TCP connection (ffi sockets, non-blocking,
--               poll() for every timeout) with an HTTP/1.x response parser that
--               keeps unread bytes for the next response (pipelining);
--               request(...) is the one-shot form, concurrent(...) opens many
--               connections at once, listen() is a fake upstream for client tests.
--
-- Plain LuaJIT only (ffi, bit, io.popen, os.execute): there is no libuv on this
-- side, so a test never shares an event loop with the server it checks.
-- Expected failures (refused, timeout, closed) return nil, "message"; misuse and
-- failed assertions raise.

local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local error, pcall, xpcall, setmetatable, getmetatable = error, pcall, xpcall, setmetatable, getmetatable
local concat, sort = table.concat, table.sort
local fmt, sub, find, match, gmatch = string.format, string.sub, string.find, string.match, string.gmatch
local gsub, lower, upper, char = string.gsub, string.lower, string.upper, string.char
local unpack = unpack
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local bor, band, rshift = bit.bor, bit.band, bit.rshift
local traceback = debug.traceback

local _M = { _VERSION = "0.1.0" }

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
    int moonlet_t_kill(int pid, int sig) __asm__("kill");
    int moonlet_t_getpid(void) __asm__("getpid");
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
local SIGNALS = { HUP = 1, INT = 2, QUIT = 3, KILL = 9, USR1 = 10, USR2 = 12,
                  TERM = 15, CONT = 18, STOP = 19 }

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

---------------------------------------------------------------------------
-- time and files
---------------------------------------------------------------------------

-- Monotonic seconds (float).
local function now()
  C.moonlet_t_clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end
_M.now = now

local function sleep(seconds)
  local deadline = now() + (seconds or 0)
  while true do
    local left = deadline - now()
    if left <= 0 then return end
    C.moonlet_t_poll(nil, 0, ceil(left * 1000))
  end
end
_M.sleep = sleep

-- Whole file as a string, or nil, err.
local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  return data
end
_M.read_file = read_file

local function shell_quote(s)
  return "'" .. gsub(tostring(s), "'", "'\\''") .. "'"
end
_M.shell_quote = shell_quote

local function sh_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true        -- Lua 5.1 style or LUAJIT_ENABLE_LUA52COMPAT
end

local function popen_read(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("*a")
  f:close()
  return out
end

-- Writes text to path (creating missing parent directories); raises on failure.
function _M.write_file(path, text)
  local f = io.open(path, "wb")
  if not f then
    local dir = match(path, "^(.*)/[^/]*$")
    if dir and dir ~= "" then sh_ok("mkdir -p " .. shell_quote(dir)) end
    local err
    f, err = io.open(path, "wb")
    if not f then error("write_file: " .. tostring(err), 2) end
  end
  f:write(text)
  f:close()
  return path
end

local keep_files = os.getenv("MOONLET_TEST_KEEP") and os.getenv("MOONLET_TEST_KEEP") ~= ""
local tmpdirs = {}        -- made by tmpdir(); removed when main() ends

local function make_tmpdir(kind)
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local dir = gsub(popen_read("mktemp -d " .. shell_quote(base .. "/moonlet-" .. kind .. ".XXXXXX")
                              .. " 2>&1"), "%s+$", "")
  if sub(dir, 1, 1) ~= "/" then error("mktemp -d failed: " .. dir, 3) end
  return dir
end

local function remove_tree(dir)
  if not keep_files and dir and match(dir, "^/.+/moonlet%-") then
    sh_ok("rm -rf " .. shell_quote(dir))
  end
end

-- A fresh private directory, removed when main() ends (kept if MOONLET_TEST_KEEP is set).
function _M.tmpdir()
  local dir = make_tmpdir("test")
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

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
_M.raise_nofile = raise_nofile

---------------------------------------------------------------------------
-- values: inspect, deep equality, JSON
---------------------------------------------------------------------------

local function quote(s)
  return (gsub(fmt("%q", s), "\\\n", "\\n"))
end

local function is_ident(k)
  return type(k) == "string" and match(k, "^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- A readable, deterministic one-line rendering of any value (sorted keys).
local function inspect(v, depth, seen)
  local t = type(v)
  if t == "string" then
    if #v > 2000 then return quote(sub(v, 1, 2000)) .. fmt("...(%d bytes)", #v) end
    return quote(v)
  elseif t == "number" then
    if tonumber(tostring(v)) ~= v and v == v then return fmt("%.17g", v) end
    return tostring(v)
  elseif t ~= "table" then
    return tostring(v)
  end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  seen, depth = seen or {}, depth or 0
  if seen[v] then return "<cycle>" end
  if depth > 8 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, n do parts[i] = inspect(v[i], depth + 1, seen) end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  sort(keys, key_order)
  for _, k in ipairs(keys) do
    local ks = is_ident(k) and k or "[" .. inspect(k, depth + 1, seen) .. "]"
    parts[#parts + 1] = ks .. " = " .. inspect(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. concat(parts, ", ") .. "}"
end
_M.inspect = inspect

local function key_path(k)
  if is_ident(k) then return "." .. k end
  return "[" .. inspect(k) .. "]"
end

-- nil when a and b are deeply equal, else the path of the first difference
-- ("" for the top) and the two differing values.
local function deep_diff(a, b, path, seen)
  if a == b then return nil end
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= a and b ~= b then return nil end              -- NaN equals NaN here
    return path, a, b
  end
  seen = seen or {}
  if seen[a] == b then return nil end                    -- cycle: assume equal
  seen[a] = b
  local keys = {}
  for k in pairs(a) do keys[#keys + 1] = k end
  for k in pairs(b) do if a[k] == nil then keys[#keys + 1] = k end end
  sort(keys, key_order)
  for _, k in ipairs(keys) do
    local p, x, y = deep_diff(a[k], b[k], path .. key_path(k), seen)
    if p then return p, x, y end
  end
  return nil
end
_M.deep_diff = deep_diff

local function string_diff(a, e)
  local i = 1
  while i <= #a and sub(a, i, i) == sub(e, i, i) do i = i + 1 end
  local from = max(1, i - 20)
  return fmt("first difference at byte %d: expected ...%s..., got ...%s...",
             i, quote(sub(e, from, i + 40)), quote(sub(a, from, i + 40)))
end

-- The JSON null value: cjson.null when cjson is used, else a sentinel of ours.
local cjson_ok, cjson = pcall(require, "cjson")
if not cjson_ok then cjson = nil end
_M.null = cjson and cjson.null or setmetatable({}, { __tostring = function() return "null" end })

local decode_value

local function json_fail(pos, what)
  error(fmt("invalid JSON at byte %d: %s", pos, what), 0)
end

local function skip_ws(str, pos)
  return find(str, "[^ \t\r\n]", pos) or #str + 1
end

local json_escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                       n = "\n", r = "\r", t = "\t" }

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + rshift(cp, 6), 0x80 + band(cp, 0x3F)) end
  if cp < 0x10000 then
    return char(0xE0 + rshift(cp, 12), 0x80 + band(rshift(cp, 6), 0x3F), 0x80 + band(cp, 0x3F))
  end
  return char(0xF0 + rshift(cp, 18), 0x80 + band(rshift(cp, 12), 0x3F),
              0x80 + band(rshift(cp, 6), 0x3F), 0x80 + band(cp, 0x3F))
end

local function decode_string(str, pos)        -- pos: the opening quote
  local parts, i = {}, pos + 1
  while true do
    local j = find(str, '["\\]', i)
    if not j then json_fail(pos, "unterminated string") end
    parts[#parts + 1] = sub(str, i, j - 1)
    if sub(str, j, j) == '"' then return concat(parts), j + 1 end
    local c = sub(str, j + 1, j + 1)
    if c == "u" then
      local hex = match(str, "^%x%x%x%x", j + 2)
      if not hex then json_fail(j, "bad \\u escape") end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = match(str, "^\\u(%x%x%x%x)", i)
        lo = lo and tonumber(lo, 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      local e = json_escapes[c]
      if not e then json_fail(j, "bad escape \\" .. c) end
      parts[#parts + 1] = e
      i = j + 2
    end
  end
end

decode_value = function(str, pos)
  pos = skip_ws(str, pos)
  local c = sub(str, pos, pos)
  if c == "{" then
    local obj = {}
    pos = skip_ws(str, pos + 1)
    if sub(str, pos, pos) == "}" then return obj, pos + 1 end
    while true do
      if sub(str, pos, pos) ~= '"' then json_fail(pos, "expected a string key") end
      local k, v
      k, pos = decode_string(str, pos)
      pos = skip_ws(str, pos)
      if sub(str, pos, pos) ~= ":" then json_fail(pos, "expected ':'") end
      v, pos = decode_value(str, pos + 1)
      obj[k] = v
      pos = skip_ws(str, pos)
      local d = sub(str, pos, pos)
      if d == "}" then return obj, pos + 1 end
      if d ~= "," then json_fail(pos, "expected ',' or '}'") end
      pos = skip_ws(str, pos + 1)
    end
  elseif c == "[" then
    local arr, n = {}, 0
    pos = skip_ws(str, pos + 1)
    if sub(str, pos, pos) == "]" then return arr, pos + 1 end
    while true do
      local v
      v, pos = decode_value(str, pos)
      n = n + 1
      arr[n] = v
      pos = skip_ws(str, pos)
      local d = sub(str, pos, pos)
      if d == "]" then return arr, pos + 1 end
      if d ~= "," then json_fail(pos, "expected ',' or ']'") end
      pos = pos + 1
    end
  elseif c == '"' then
    return decode_string(str, pos)
  elseif sub(str, pos, pos + 3) == "true" then
    return true, pos + 4
  elseif sub(str, pos, pos + 4) == "false" then
    return false, pos + 5
  elseif sub(str, pos, pos + 3) == "null" then
    return _M.null, pos + 4
  end
  local _, e = find(str, "^-?%d+", pos)
  if not e then json_fail(pos, c == "" and "unexpected end" or "unexpected " .. quote(c)) end
  local _, e2 = find(str, "^%.%d+", e + 1)
  e = e2 or e
  _, e2 = find(str, "^[eE][-+]?%d+", e + 1)
  e = e2 or e
  return tonumber(sub(str, pos, e)), e + 1
end

-- The fallback decoder (always available; used when cjson is not).
function _M.json_decode_lua(str)
  if type(str) ~= "string" then error("json_decode: expected a string, got " .. type(str), 2) end
  local v, pos = decode_value(str, 1)
  pos = skip_ws(str, pos)
  if pos <= #str then json_fail(pos, "trailing garbage") end
  return v
end

-- Decodes JSON (cjson when available); raises on invalid input.
_M.json_decode = cjson and cjson.decode or _M.json_decode_lua

---------------------------------------------------------------------------
-- assertions: each raises at the caller's line; messages show the values
---------------------------------------------------------------------------

local function prefix(msg)
  return msg ~= nil and (tostring(msg) .. ": ") or ""
end

-- Deep equality (tables compared by content, NaN equals NaN).
function _M.eq(actual, expected, msg)
  local path, a, e = deep_diff(actual, expected, "")
  if not path then return true end
  local text = fmt("%sexpected %s, got %s", prefix(msg), inspect(e), inspect(a))
  if type(a) == "string" and type(e) == "string" and (#a > 60 or #e > 60) then
    text = text .. "\n" .. string_diff(a, e)
  end
  if path ~= "" then
    text = fmt("%s (at %s)\n  expected: %s\n  actual:   %s", text, path,
               inspect(expected), inspect(actual))
  end
  error(text, 2)
end

-- Truthiness; returns the value.
function _M.ok(value, msg)
  if not value then
    error(prefix(msg) .. "expected a true value, got " .. inspect(value), 2)
  end
  return value
end

-- str must match the Lua pattern; returns the captures (or the whole match).
function _M.match(str, pattern, msg)
  if type(str) ~= "string" and type(str) ~= "number" then
    error(fmt("%sexpected a string matching %s, got %s", prefix(msg), quote(pattern), inspect(str)), 2)
  end
  local r = { match(str, pattern) }
  if r[1] == nil then
    error(fmt("%s%s does not match %s", prefix(msg), inspect(str), quote(pattern)), 2)
  end
  return unpack(r)
end

-- |actual - expected| <= tolerance (default 1e-9).
function _M.near(actual, expected, tolerance, msg)
  tolerance = tolerance or 1e-9
  if type(actual) ~= "number" or type(expected) ~= "number"
     or not (math.abs(actual - expected) <= tolerance) then   -- luacheck: ignore 581 (NaN must fail)
    error(fmt("%sexpected %s within %s, got %s", prefix(msg), inspect(expected),
              inspect(tolerance), inspect(actual)), 2)
  end
  return true
end

-- fn must raise; if pattern is given the error text must match it. Returns the error.
function _M.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then error(prefix(msg) .. "expected an error, but the function returned", 2) end
  if pattern then
    local text = type(err) == "string" and err or inspect(err)
    if not find(text, pattern) then
      error(fmt("%serror %s does not match %s", prefix(msg), quote(text), quote(pattern)), 2)
    end
  end
  return err
end

---------------------------------------------------------------------------
-- HTTP/1.x parsing (shared by the connection and concurrent())
---------------------------------------------------------------------------

local Response = {}
Response.__index = Response

-- Decoded JSON body; raises with the body if it is not JSON.
function Response:json()
  local ok, v = pcall(_M.json_decode, self.body)
  if not ok then
    error(fmt("response body is not JSON (%s): %s", tostring(v), inspect(self.body)), 2)
  end
  return v
end

-- Every value of a header, in order (names are case-insensitive).
function Response:header_values(name)
  name = lower(name)
  local out = {}
  for _, h in ipairs(self.header_list) do
    if h.name == name then out[#out + 1] = h.value end
  end
  return out
end

local function bad(what, s)
  if s then return "invalid response: " .. what .. " " .. inspect(sub(s, 1, 200)) end
  return "invalid response: " .. what
end

-- Header lines from head (CRLF separated, from pos up to stop) into headers/list.
local function parse_fields(buf, pos, stop, headers, list)
  while pos < stop do
    local e = find(buf, "\r\n", pos, true)
    if not e or e > stop then e = stop end
    local line = sub(buf, pos, e - 1)
    local name, value = match(line, "^([^:%s]+):[ \t]*(.-)[ \t]*$")
    if not name then return nil, bad("header line", line) end
    name = lower(name)
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
  local sl = sub(buf, pos, sl_end - 1)
  local version, status, reason = match(sl, "^(HTTP/%d%.%d) (%d%d%d)(.*)$")
  if not version or (reason ~= "" and sub(reason, 1, 1) ~= " ") then
    return nil, bad("status line", sl)
  end
  local res = setmetatable({ status = tonumber(status), reason = sub(reason, 2),
                             version = version, headers = {}, header_list = {} }, Response)
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
  if cl then
    local n
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
_M.parse_response = parse_response

-- Parses one HTTP/1.x request (for fake upstreams): { method, target, path,
-- version, headers, header_list, body, raw }, rest; or nil, "incomplete" / "invalid ...".
local function parse_request(buf)
  local hend = find(buf, "\r\n\r\n", 1, true)
  if not hend then return nil, "incomplete", #buf + 1 end
  local rl_end = find(buf, "\r\n", 1, true)
  local rl = sub(buf, 1, rl_end - 1)
  local method, target, version = match(rl, "^(%u+) (%S+) (HTTP/%d%.%d)$")
  if not method then return nil, "invalid request: request line " .. inspect(rl) end
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
    if not n then return nil, "invalid request: content-length " .. inspect(cl) end
    stop = hend + 3 + n
    if #buf < stop then return nil, "incomplete", stop end
    req.body = sub(buf, bstart, stop)
  else
    req.body = ""
  end
  req.raw = sub(buf, 1, stop)
  return req, sub(buf, stop + 1)
end
_M.parse_request = parse_request

---------------------------------------------------------------------------
-- raw TCP connections
---------------------------------------------------------------------------

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

-- Connects to host:port (default 127.0.0.1). Returns a connection, or nil, err
-- ("connection refused", "timeout", ...).
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

-- Sends all of data. Returns true, or nil, "closed" / "timeout" / err.
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

-- Buffered bytes first, else whatever arrives: data, or nil, "timeout" / "closed".
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

-- Exactly one response (pipelining-safe). read_response(timeout[, opts]) or
-- read_response(opts) with opts.timeout; opts.head = true for a HEAD request.
-- Returns res, or nil, "timeout" / "closed" / "invalid response: ...".
function Conn:read_response(timeout, opts)
  if type(timeout) == "table" then timeout, opts = timeout.timeout, timeout end
  opts = opts or {}
  return read_parsed(self, timeout, parse_response, { head = opts.head })
end

-- Only the status line and headers; the body stays buffered (read it with
-- :read_chunk(), :recv() or :read_all()). Returns res without body.
function Conn:read_head(timeout)
  return read_parsed(self, timeout, function(buf)
    local res, pos, need = parse_head(buf)
    if not res then return nil, pos, need end
    res.raw = sub(buf, 1, pos - 1)
    return res, sub(buf, pos)
  end, {})
end

-- The next chunk of a chunked body after :read_head(): its data, or "" for the
-- last chunk (trailers consumed); nil, err otherwise. For streaming / SSE tests.
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

-- One request (for fake upstreams built with listen()).
function Conn:read_request(timeout)
  return read_parsed(self, timeout, parse_request, {})
end

-- Everything until the peer closes: data, or nil, "timeout", data_so_far.
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

-- True if the peer closes (EOF or reset) within timeout (default 5 s), false
-- if not. Data arriving meanwhile is kept buffered.
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

-- Half-close: no more sending (the peer sees EOF), reading still works.
function Conn:shutdown()
  if self._h[0] >= 0 then C.moonlet_t_shutdown(self.fd, SHUT_WR) end
  return true
end

-- Closes with a TCP RST instead of a FIN (an abruptly vanished client).
function Conn:reset()
  if self._h[0] >= 0 then
    local l = ffi.new("struct moonlet_t_linger", 1, 0)
    C.moonlet_t_setsockopt(self.fd, SOL_SOCKET, SO_LINGER, l, ffi.sizeof(l))
  end
  return self:close()
end

function Conn:close()
  close_holder(self._h)
  return true
end

-- A listening socket on 127.0.0.1 (port 0 = any free port): a fake upstream for
-- tests of moonlet's HTTP client. listener.port, listener:accept(timeout) → conn
-- or nil, "timeout"; listener:close().
local Listener = {}
Listener.__index = Listener

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

function Listener:close()
  close_holder(self._h)
  return true
end

local function build_request(port, method, path, opts)
  local lines = { fmt("%s %s HTTP/1.1", method, path) }
  local have = {}
  local headers = opts.headers or {}
  local names = {}
  for k in pairs(headers) do names[#names + 1] = k end
  sort(names, key_order)
  for _, k in ipairs(names) do
    local v = headers[k]
    have[lower(k)] = true
    if type(v) == "table" then
      for _, x in ipairs(v) do lines[#lines + 1] = k .. ": " .. tostring(x) end
    else
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
  if not have.host then lines[#lines + 1] = fmt("Host: %s:%d", opts.host or "127.0.0.1", port) end
  if opts.body and not have["content-length"] and not have["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #opts.body
  end
  if not have.connection then lines[#lines + 1] = "Connection: close" end
  return concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")
end
_M.build_request = build_request

-- One request on a fresh connection (Connection: close).
-- opts: headers (name → value or list of values), body, host, timeout.
-- Returns res, or nil, err.
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

-- Opens n connections at once, sends raw_request on each and waits (one poll()
-- over all of them) until each has a complete response or timeout (default 30 s)
-- passes. Returns { ok = complete 2xx responses, statuses = {status → count},
-- errors = failed or timed-out connections, timeouts = how many of those timed
-- out, error_kinds = {message → count}, elapsed = seconds }.
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

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

local Proc = {}
Proc.__index = Proc

local procs = {}            -- running or unreaped process objects, in start order

local probes = {}
local function probe(name, cmd)
  if probes[name] == nil then probes[name] = sh_ok(cmd .. " >/dev/null 2>&1") end
  return probes[name]
end

local function untrack(p)
  for i = #procs, 1, -1 do
    if procs[i] == p then table.remove(procs, i) end
  end
end

local function tail(text, lines)
  local all = {}
  for line in gmatch(text or "", "[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return concat(all, "", max(1, #all - (lines or 30) + 1))
end

-- Starts `bin argv...` in the background. The command line run by /bin/sh:
--   ( setsid env --default-signal=INT,QUIT [VAR=v] BIN ARGS <in >D/stdout 2>D/stderr &
--     c=$!; echo $c >D/pid.tmp; mv ...; WATCHER &
--     wait $c; echo $? >D/status.tmp; mv ... ) &
-- setsid gives the child its own process group (so a KILL reaches workers it
-- forks) without forking again, so $! is the binary's pid; env restores SIGINT and
-- SIGQUIT, which sh ignores in background jobs. The watcher polls once a second
-- and kills the group if this test process is gone (runner killed, Ctrl-C), so
-- no server outlives the run even when main() cannot clean up.
local function spawn(argv, opts)
  raise_nofile(65536)
  local dir = make_tmpdir("proc")
  local bin = opts.bin or os.getenv("MOONLET_BIN")
  if not bin or bin == "" then bin = "build/moonlet" end
  if opts.cwd and sub(bin, 1, 1) ~= "/" and find(bin, "/", 1, true) then
    bin = gsub(popen_read("pwd"), "%s+$", "") .. "/" .. bin
  end
  local words = {}
  local group = probe("setsid", "command -v setsid")
  if group then words[#words + 1] = "setsid" end
  words[#words + 1] = "env"
  if probe("default-signal", "env --default-signal=INT true") then
    words[#words + 1] = "--default-signal=INT,QUIT"
  end
  if opts.env then
    local names = {}
    for k in pairs(opts.env) do
      if type(k) ~= "string" or not match(k, "^[%a_][%w_]*$") then
        error("bad environment variable name " .. inspect(k), 3)
      end
      names[#names + 1] = k
    end
    sort(names)
    for _, k in ipairs(names) do
      if opts.env[k] == false then words[#words + 1] = "-u " .. k end
    end
    for _, k in ipairs(names) do
      if opts.env[k] ~= false then words[#words + 1] = k .. "=" .. shell_quote(opts.env[k]) end
    end
  end
  words[#words + 1] = shell_quote(bin)
  for _, a in ipairs(argv) do words[#words + 1] = shell_quote(a) end
  local cmd = concat(words, " ")
  local stdin = "/dev/null"
  if opts.stdin then
    stdin = dir .. "/stdin"
    _M.write_file(stdin, opts.stdin)
  end
  local D = function(name) return shell_quote(dir .. "/" .. name) end
  if opts.cwd then               -- exec: the subshell becomes the binary, same pid
    cmd = fmt("( cd %s && exec %s )", shell_quote(opts.cwd), cmd)
  end
  local runner = C.moonlet_t_getpid()
  local watcher = fmt("( while kill -0 %d && kill -0 $c; do sleep 1; done 2>/dev/null;"
                      .. " kill -0 %d 2>/dev/null || kill -s KILL -- -$c $c 2>/dev/null )",
                      runner, runner)
  local line = fmt("( %s <%s >%s 2>%s & c=$!; echo $c >%s; mv %s %s; %s & wait $c; echo $? >%s;"
                   .. " mv %s %s; kill -0 %d || rm -rf %s ) </dev/null >/dev/null 2>&1 &",
                   cmd, shell_quote(stdin), D("stdout"), D("stderr"), D("pid.tmp"), D("pid.tmp"),
                   D("pid"), watcher, D("status.tmp"), D("status.tmp"), D("status"),
                   runner, shell_quote(dir))
  os.execute(line)
  local p = setmetatable({ dir = dir, bin = bin, argv = argv, cmd = cmd, group = group,
                           host = "127.0.0.1" }, Proc)
  local deadline = now() + 10
  while true do
    p.pid = tonumber(match(read_file(dir .. "/pid") or "", "%d+"))
    if p.pid then break end
    if now() >= deadline then
      remove_tree(dir)
      error("could not start " .. cmd, 3)
    end
    sleep(0.002)
  end
  procs[#procs + 1] = p
  return p
end

-- Exit status (128 + signal number if killed by one), or nil while running.
function Proc:poll()
  if self.status == nil and not self.finished then
    self.status = tonumber(match(read_file(self.dir .. "/status") or "", "%d+"))
  end
  return self.status
end

function Proc:stdout()
  if self.finished then return self._stdout end
  return read_file(self.dir .. "/stdout") or ""
end

function Proc:stderr()
  if self.finished then return self._stderr end
  return read_file(self.dir .. "/stderr") or ""
end

-- Byte offset of the end of stderr now, for :wait_log(pattern, timeout, mark).
function Proc:mark()
  return #self:stderr()
end

-- Waits until a line of stderr (after byte offset `from`, default 0) matches
-- the Lua pattern; returns that line and the offset after it. Raises with the
-- log tail on timeout (default 10 s) or if the process exits first.
function Proc:wait_log(pattern, timeout, from)
  timeout = timeout or DEFAULT_TIMEOUT
  local deadline = now() + timeout
  local pos = (from or 0) + 1
  while true do
    local exited = self:poll()             -- before the read: then the read is final
    local text = self:stderr()
    while true do
      local nl = find(text, "\n", pos, true)
      local last = not nl and exited ~= nil and pos <= #text
      if not nl and not last then break end
      local line = sub(text, pos, (nl or #text + 1) - 1)
      if find(gsub(line, "\r$", ""), pattern) then return gsub(line, "\r$", ""), (nl or #text) end
      pos = (nl or #text) + 1
    end
    if exited then
      error(fmt("process exited (status %d) before stderr matched %s; stderr tail:\n%s",
                exited, quote(pattern), tail(text)), 2)
    end
    if now() >= deadline then
      error(fmt("timeout after %gs waiting for stderr to match %s; stderr tail:\n%s",
                timeout, quote(pattern), tail(text)), 2)
    end
    sleep(0.01)
  end
end

-- Sends a signal ("TERM", "INT", "KILL", "HUP", ... or a number) to the process.
function Proc:signal(name)
  local sig = SIGNALS[name] or tonumber(name)
  if not sig then error("unknown signal " .. tostring(name), 2) end
  if self:poll() then return nil, "exited" end
  if C.moonlet_t_kill(self.pid, sig) ~= 0 then return nil, errmsg(ffi.errno()) end
  return true
end

-- Exit status, or nil if the process still runs after timeout (default 10 s).
function Proc:wait(timeout)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local s = self:poll()
    if s or now() >= deadline then return s end
    sleep(0.01)
  end
end

-- SIGKILL to the process and everything in its process group.
function Proc:kill()
  if not self.finished then
    if self.group then C.moonlet_t_kill(-self.pid, 9) end
    C.moonlet_t_kill(self.pid, 9)
  end
  return self:wait(5)
end

-- Keeps the output in memory, removes the temp dir, forgets the process.
function Proc:finish()
  if self.finished then return end
  self:poll()
  self._stdout, self._stderr = self:stdout(), self:stderr()
  if self.group and self.status then C.moonlet_t_kill(-self.pid, 9) end   -- leftover workers
  self.finished = true
  remove_tree(self.dir)
  untrack(self)
end

-- TERM, up to `grace` (default 15) seconds to exit, then KILL. Returns the exit
-- status (143 = ended by TERM, 137 = by KILL). Safe to call again.
-- Raises when the process's stderr holds an AddressSanitizer/UBSan/LeakSanitizer report
-- (make test-asan): a memory error must fail the suite even if every response was right.
function Proc:stop(grace)
  if not self.finished then
    if not self:poll() then
      self:signal("TERM")
      if not self:wait(grace or 15) then self:kill() end
    end
    self:finish()
    local err = self._stderr or ""
    local report = match(err, "[^\n]*Sanitizer[^\n]*") or match(err, "[^\n]*: runtime error:[^\n]*")
    if report then
      error("sanitizer report from pid " .. self.pid .. ": " .. report .. "\n" .. sub(err, -3000), 2)
    end
  end
  return self.status
end

-- Convenience: testing.request / testing.connect against this server.
function Proc:request(method, path, opts)
  return _M.request(self.port, method, path, opts)
end

function Proc:connect(timeout)
  return _M.connect(self.port, self.host, timeout)
end

local function launch(opts, strict)
  opts = opts or {}
  local argv = { "serve" }
  if opts.app then argv[#argv + 1] = opts.app end
  for _, a in ipairs({ "--host", "127.0.0.1", "--port", tostring(opts.port or 0) }) do
    argv[#argv + 1] = a
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  local p = spawn(argv, opts)
  p.listening = false
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local deadline = now() + timeout
  local pat = "listening on http://%[?([^%s/%]]+)%]?:(%d+)"
  while true do
    local exited = p:poll()
    local host, port = match(p:stdout(), pat)
    if not host then host, port = match(p:stderr(), pat) end
    if host then
      p.host, p.port, p.listening = host, tonumber(port), true
      p.url = fmt("http://%s:%d", host, p.port)
      return p
    end
    if exited then
      if not strict then return p end
      local err = p:stderr()
      p:finish()
      error(fmt("%s exited (status %d) before listening; stderr:\n%s", p.cmd, exited, tail(err, 60)), 3)
    end
    if now() >= deadline then
      if not strict then return p end
      p:kill()
      local err = p:stderr()
      p:finish()
      error(fmt("%s did not print 'listening on' within %gs; stderr:\n%s", p.cmd, timeout,
                tail(err, 60)), 3)
    end
    sleep(0.01)
  end
end

-- Starts `<bin> serve <app> --host 127.0.0.1 --port 0 <args...>` and waits for
-- "listening on http://HOST:PORT". opts: app, args, env (name → value, false to
-- unset), bin (default $MOONLET_BIN or build/moonlet), cwd, stdin, port, timeout
-- (default 10). Returns the server (.port .host .pid .url); raises with stderr
-- if it exits or times out first.
function _M.server(opts)
  return launch(opts, true)
end

-- Like server() but never raises on a failed start: returns the process with
-- .listening false; :wait(timeout) then gives its exit status.
function _M.start(opts)
  return launch(opts, false)
end

-- Runs `<bin> argv...` to completion. opts: a timeout in seconds (default 10) or
-- a table { timeout, env, bin, cwd, stdin }. Returns { status, stdout, stderr };
-- raises (with stderr) if it does not finish in time.
function _M.run(argv, opts)
  if type(opts) ~= "table" then opts = { timeout = opts } end
  local p = spawn(argv or {}, opts)
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local status = p:wait(timeout)
  if not status then
    p:kill()
    p:finish()
    error(fmt("%s did not finish within %gs; stderr:\n%s", p.cmd, timeout, tail(p._stderr)), 2)
  end
  p:finish()
  return { status = status, stdout = p._stdout, stderr = p._stderr }
end

-- Ends every process still tracked (TERM, 2 s grace, KILL); returns how many ran.
local function reap_all(say)
  local n = 0
  for i = #procs, 1, -1 do
    local p = procs[i]
    if p and not p:poll() then
      n = n + 1
      if say then say(fmt("# stopping leftover process %d: %s", p.pid, p.cmd)) end
      p:stop(2)
    elseif p then
      p:finish()
    end
  end
  return n
end
_M.stop_all = reap_all

---------------------------------------------------------------------------
-- runner
---------------------------------------------------------------------------

local run                   -- state of the current main(): counters, block stack

local function emit(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

local function err_text(e)
  if type(e) == "string" then return e end
  return inspect(e)
end

-- xpcall handler: message plus traceback, cut at the runner's own frames.
local function on_error(e)
  local tb = traceback(err_text(e), 2)
  local cut = find(tb, "\n[^\n]*%[C%]: in function 'xpcall'")
  if cut then tb = sub(tb, 1, cut - 1) end
  -- An assertion's own frames (error, then eq/match/... in this file) say nothing.
  local head, frames = match(tb, "^(.-\nstack traceback:\n)(.*)$")
  if head then
    frames = gsub(frames, "^\t%[C%]: in function 'error'\n", "")
    frames = gsub(frames, "^\t[^\n]*moonlet/testing%.lua:%d+: in function '[%w_]+'\n", "")
    tb = head .. frames
  end
  return tb
end

local function indent(text)
  return "    " .. gsub(text, "\n", "\n    ")
end

local function new_block(name, parent)
  return { name = name, parent = parent, children = {}, before_all = {}, after_all = {},
           before_each = {}, after_each = {} }
end

local function block_path(b)
  local names = {}
  while b and b.parent do
    table.insert(names, 1, b.name)
    b = b.parent
  end
  return concat(names, " ")
end

local function label(path, name)
  if path == "" then return name end
  return path .. " " .. name
end

local function current_block(what)
  if not run or not run.stack then error(what .. "() is only available in spec files", 3) end
  if run.running then error(what .. "() must be called while the spec file loads, not inside a test", 3) end
  return run.stack[#run.stack]
end

local function check_fn(what, fn)
  if type(fn) ~= "function" then error(fmt("%s() expects a function, got %s", what, type(fn)), 3) end
end

local dsl = {}

function dsl.describe(name, fn)
  local parent = current_block("describe")
  check_fn("describe", fn)
  local b = new_block(tostring(name), parent)
  parent.children[#parent.children + 1] = { kind = "describe", block = b }
  run.stack[#run.stack + 1] = b
  local ok, err = xpcall(fn, on_error)
  run.stack[#run.stack] = nil
  if not ok then b.children[#b.children + 1] = { kind = "error", name = "(describe body)", err = err } end
end

function dsl.it(name, fn)
  local b = current_block("it")
  check_fn("it", fn)
  b.children[#b.children + 1] = { kind = "it", name = tostring(name), fn = fn }
end

for _, hook in ipairs({ "before_all", "after_all", "before_each", "after_each" }) do
  dsl[hook] = function(fn)
    local b = current_block(hook)
    check_fn(hook, fn)
    local list = b[hook]
    list[#list + 1] = fn
  end
end

local function selected(b, item)
  local pat = run.filter
  if not pat then return true end
  return find(item.name, pat) ~= nil or find(label(block_path(b), item.name), pat) ~= nil
end

-- True if the block holds a test to run or an error to report.
local function has_work(b)
  for _, c in ipairs(b.children) do
    if c.kind == "error" then return true end
    if c.kind == "it" and selected(b, c) then return true end
    if c.kind == "describe" and has_work(c.block) then return true end
  end
  return false
end

local function count_tests(b)
  local n = 0
  for _, c in ipairs(b.children) do
    if c.kind == "it" and selected(b, c) then n = n + 1 end
    if c.kind == "describe" then n = n + count_tests(c.block) end
  end
  return n
end

local function pass(name, ms)
  run.passed = run.passed + 1
  emit(fmt("ok - %s (%d ms)", name, ms))
end

local function fail(name, ms, err)
  run.failed = run.failed + 1
  emit(fmt("FAIL - %s (%d ms)", name, ms))
  emit(indent(err))
end

local function each_hooks(b, kind)
  local chain = {}
  while b do
    table.insert(chain, 1, b)
    b = b.parent
  end
  local out = {}
  if kind == "before_each" then
    for _, x in ipairs(chain) do for _, h in ipairs(x.before_each) do out[#out + 1] = h end end
  else
    for i = #chain, 1, -1 do for _, h in ipairs(chain[i].after_each) do out[#out + 1] = h end end
  end
  return out
end

local function run_test(b, item)
  local name = label(block_path(b), item.name)
  local t0 = now()
  local ok, err = true, nil
  for _, h in ipairs(each_hooks(b, "before_each")) do
    ok, err = xpcall(h, on_error)
    if not ok then err = "before_each: " .. err; break end
  end
  if ok then ok, err = xpcall(item.fn, on_error) end
  for _, h in ipairs(each_hooks(b, "after_each")) do
    local aok, aerr = xpcall(h, on_error)
    if not aok then
      err = (err and err .. "\n" or "") .. "after_each: " .. aerr
      ok = false
    end
  end
  local ms = floor((now() - t0) * 1000 + 0.5)
  if ok then pass(name, ms) else fail(name, ms, err) end
end

local function run_block(b)
  if not has_work(b) then return end
  local path = block_path(b)
  local ready = true
  for _, h in ipairs(b.before_all) do
    local t0 = now()
    local ok, err = xpcall(h, on_error)
    if not ok then
      fail(label(path, "before_all"), floor((now() - t0) * 1000 + 0.5),
           err .. fmt("\n(%d test(s) in this block not run)", count_tests(b)))
      ready = false
      break
    end
  end
  if ready then
    for _, c in ipairs(b.children) do
      if c.kind == "it" then
        if selected(b, c) then run_test(b, c) end
      elseif c.kind == "describe" then
        run_block(c.block)
      else
        fail(label(path, c.name), 0, c.err)
      end
    end
  end
  for _, h in ipairs(b.after_all) do
    local t0 = now()
    local ok, err = xpcall(h, on_error)
    if not ok then fail(label(path, "after_all"), floor((now() - t0) * 1000 + 0.5), err) end
  end
end

local assertion_names = { "eq", "ok", "match", "near", "raises" }

local function spec_env()
  local env = { testing = _M }
  for k, f in pairs(dsl) do env[k] = f end
  for _, k in ipairs(assertion_names) do env[k] = _M[k] end
  return setmetatable(env, { __index = _G })
end

local function run_file(file)
  emit("# " .. file)
  local chunk, err = loadfile(file)
  if not chunk then
    fail(file .. " (load error)", 0, err)
    return
  end
  setfenv(chunk, spec_env())
  local root = new_block(nil, nil)
  run.stack, run.running = { root }, false
  local ok, lerr = xpcall(chunk, on_error)
  run.running = true
  if not ok then
    root.children[#root.children + 1] = { kind = "error", name = file .. " (error while loading)", err = lerr }
  end
  run_block(root)
  run.stack = nil
  reap_all(emit)
end

local function is_dir(path)
  return sh_ok("test -d " .. shell_quote(path))
end

local function spec_files(paths)
  local files, seen = {}, {}
  local function add(f)
    if not seen[f] then seen[f] = true; files[#files + 1] = f end
  end
  for _, p in ipairs(paths) do
    if is_dir(p) then
      local found = {}
      local out = popen_read("find " .. shell_quote(p) .. " -name '*_spec.lua' -type f 2>/dev/null")
      for f in gmatch(out, "[^\n]+") do found[#found + 1] = f end
      sort(found)
      for _, f in ipairs(found) do add(f) end
    else
      add(p)                   -- a missing file shows up as a load error
    end
  end
  return files
end

local function main(paths)
  paths = paths or {}
  if #paths == 0 then paths = { "tests/spec" } end
  local filter = os.getenv("MOONLET_TEST_FILTER")
  if filter == "" then filter = nil end
  run = { passed = 0, failed = 0, filter = filter }
  if filter and not pcall(find, "", filter) then
    fail("MOONLET_TEST_FILTER", 0, "not a valid Lua pattern: " .. quote(filter))
    return
  end
  local files = spec_files(paths)
  if #files == 0 then emit("# no *_spec.lua files under " .. concat(paths, " ")) end
  for _, f in ipairs(files) do run_file(f) end
end

-- Runs the spec files under paths (default {"tests/spec"}); prints one line per
-- test and, last, "N passed, N failed". Returns 0 if nothing failed, else 1.
function _M.main(paths)
  io.stdout:setvbuf("line")
  local ok, err = xpcall(main, traceback, paths)
  run = run or { passed = 0, failed = 0 }
  if not ok then fail("moonlet.testing internal error", 0, tostring(err)) end
  local cok, cerr = pcall(reap_all, emit)
  if not cok then fail("moonlet.testing cleanup", 0, tostring(cerr)) end
  for _, d in ipairs(tmpdirs) do remove_tree(d) end
  tmpdirs = {}
  local passed, failed = run.passed, run.failed
  run = nil
  emit(fmt("%d passed, %d failed", passed, failed))
  return failed == 0 and 0 or 1
end

return _M
