-- moonlet.testing.app_client: the in-process test client (FastAPI's TestClient).
--
--   local client = require("moonlet.testing").client(app_or_dir [, opts])
--   local res = client:get("/items/1", { query =, headers =, cookies = })
--   client:post(path, { json = v | form = t | body = s, ... })   put, patch, delete, head,
--                                                                options, request(method, path, o)
--   res.status, res.headers (lower-case names), res.body, res:json(), res:header_values(n)
--   client.cookies     the jar: { name = value }, fed by Set-Cookie like a browser's
--   client:websocket(path [, o]) -> ws: ws:send(text), ws:send_binary(data),
--                      ws:receive() -> data, "text"|"binary" | nil, "closed", code; ws:close()
--   client:start()     runs the app's startup hooks (once); client:close() its shutdown hooks
--                      (when started) and frees everything
--
-- The app runs in the spec's own Lua state, on the runner's loop (core: test_client.c),
-- behind the real server: each request is real HTTP/1.1 bytes through a memory connection
-- (no socket, no port), parsed by llhttp, routed, dispatched and serialized exactly as in
-- `moonlet serve`; the call blocks the spec while the loop runs. app:override applies, as
-- the app is the same table. Pooled routes run on real pool threads, whose states load
-- the app's directory: give a directory, or opts.dir with an app table.
-- opts: dir, pool_size (4), executor_size (4: run_in_pool's threads), log_level (2: warnings; 1 shows the access log), debug (false:
-- `moonlet serve --debug`'s development mode, process-wide while the client is open, like
-- log_level: a 500 carries its error, response schemas are checked), timeout (30 s
-- per response).
local core = require "moonlet.core"
local deps = require "moonlet.deps"
local App = require "moonlet.app"
local json = require "cjson"
local bit = require "bit"
local http = require "moonlet.testing.client"

local type, tostring, pairs, ipairs, error, setmetatable, tonumber, select, next =
  type, tostring, pairs, ipairs, error, setmetatable, tonumber, select, next
local concat, sort = table.concat, table.sort
local fmt, sub, find, match, gsub, lower, upper, byte, char, rep =
  string.format, string.sub, string.find, string.match, string.gsub, string.lower,
  string.upper, string.byte, string.char, string.rep
local band, bor, bxor, rshift, lshift = bit.band, bit.bor, bit.bxor, bit.rshift, bit.lshift

---@class moonlet.testing.app_client
local _M = { _VERSION = "0.1.0" }
---The in-process test client (t.client): requests through the real server code, no socket.
---@class moonlet.testing.Client
---@field app moonlet.App the app (client.app:override(dep, fn))
---@field cookies table<string, string> the jar Set-Cookie feeds
---@field get fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field head fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field post fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field put fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field patch fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field delete fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
---@field options fun(self: moonlet.testing.Client, path: string, o?: table): moonlet.testing.Response
local Client = {}
Client.__index = Client

local function argerr(n, fname, msg, level)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), (level or 2) + 1)
end

---------------------------------------------------------------------------
-- building requests
---------------------------------------------------------------------------

local function urlencode(s)
  return (gsub(tostring(s), "[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

-- "a=1&b=x%20y" from { a = 1, b = "x y", c = { 1, 2 } } (sorted, lists repeated).
local function encode_pairs(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "table" then
      for _, x in ipairs(v) do out[#out + 1] = urlencode(k) .. "=" .. urlencode(x) end
    else
      out[#out + 1] = urlencode(k) .. "=" .. urlencode(v)
    end
  end
  return concat(out, "&")
end
---encode_pairs(t) -> "a=1&b=2": a table as an urlencoded query or form (lists repeat).
_M.encode_pairs = encode_pairs

local function cookie_header(jar, extra)
  if not extra and next(jar) == nil then return nil end
  local all = {}
  for k, v in pairs(jar) do all[k] = v end
  for k, v in pairs(extra or {}) do all[k] = tostring(v) end
  local names = {}
  for k in pairs(all) do names[#names + 1] = k end
  if #names == 0 then return nil end
  sort(names)
  for i, k in ipairs(names) do names[i] = k .. "=" .. all[k] end
  return concat(names, "; ")
end

-- The request's bytes: method, target, headers (name -> value or list), body.
local function build(self, method, path, o)
  local target = path
  if o.query then
    local q = type(o.query) == "table" and encode_pairs(o.query) or tostring(o.query)
    if q ~= "" then target = target .. (find(path, "?", 1, true) and "&" or "?") .. q end
  end
  local lines = { method .. " " .. target .. " HTTP/1.1" }
  local have = http.header_lines(lines, o.headers)
  local body = o.body
  local ctype
  if o.json ~= nil then
    body, ctype = json.encode(o.json), "application/json"
  elseif o.form then
    body, ctype = encode_pairs(o.form), "application/x-www-form-urlencoded"
  end
  if ctype and not have["content-type"] then lines[#lines + 1] = "Content-Type: " .. ctype end
  if not have.host then lines[#lines + 1] = "Host: testserver" end
  local cookies = not have.cookie and cookie_header(self.cookies, o.cookies)
  if cookies then lines[#lines + 1] = "Cookie: " .. cookies end
  if body and not have["content-length"] and not have["transfer-encoding"] then
    lines[#lines + 1] = "Content-Length: " .. #body
  end
  lines[#lines + 1] = "\r\n"
  return concat(lines, "\r\n") .. (body or "")
end

---------------------------------------------------------------------------
-- the cookie jar
---------------------------------------------------------------------------

-- Set-Cookie: name=value[; Path=..; Max-Age=..; Expires=..]. Max-Age <= 0 or an Expires
-- in the past deletes the cookie; the rest of the attributes are not checked.
local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

local function expired(date)
  local d, mon, y, h, mi, s = match(date, "(%d+)[ %-](%a+)[ %-](%d+) (%d+):(%d+):(%d+)")
  if not d or not MONTHS[mon] then return false end
  local t = os.time({ year = tonumber(y), month = MONTHS[mon], day = tonumber(d),
                      hour = tonumber(h), min = tonumber(mi), sec = tonumber(s), isdst = false })
  local now = os.time(os.date("!*t"))
  return t <= now
end

local function store_cookie(jar, line)
  local name, value, attrs = match(line, "^%s*([^=;%s]+)%s*=%s*([^;]*)(.*)$")
  if not name then return end
  value = match(value, "^(.-)%s*$")
  local gone = false
  for attr in attrs:gmatch(";%s*([^;]+)") do
    local k, v = match(attr, "^([^=]+)=?(.*)$")
    k = lower(match(k, "^(.-)%s*$"))
    if k == "max-age" and tonumber(v) and tonumber(v) <= 0 then gone = true end
    if k == "expires" and expired(v) then gone = true end
  end
  if gone then jar[name] = nil else jar[name] = value end
end

local function take_cookies(jar, res)
  if not res.headers["set-cookie"] then return end
  for _, h in ipairs(res.header_list or {}) do
    if h.name == "set-cookie" then store_cookie(jar, h.value) end
  end
end

---------------------------------------------------------------------------
-- the client
---------------------------------------------------------------------------

local function has_pooled(app)
  for _, r in ipairs(app.routes or {}) do
    if r.pooled then return true end
  end
  return false
end

---t.client(app_or_dir[, opts]): FastAPI's TestClient, the app in this process (README
---"Testing your app"). opts: dir, pool_size, executor_size, log_level, timeout.
---@return moonlet.testing.Client
---@param app_or_dir moonlet.App|string
---@param opts table?
function _M.client(app_or_dir, opts)
  opts = opts or {}
  if type(opts) ~= "table" then argerr(2, "client", "expected a table of options") end
  local app, dir = app_or_dir, opts.dir
  if type(app_or_dir) == "string" then
    dir = gsub(app_or_dir, "/+$", "")
    local err
    app, err = App.load_dir(dir)
    if not app then error(err, 2) end
  elseif type(app_or_dir) ~= "table" then
    argerr(1, "client", "expected an app or its directory")
  end
  if dir ~= nil and type(dir) ~= "string" then argerr(2, "client", "dir: expected a string") end
  local tc, err = core.test_client_new(app, dir, opts.pool_size, opts.log_level,
                                      opts.debug == true, opts.executor_size)
  if not tc then error(err, 2) end
  if not dir and has_pooled(app) then
    tc:close()
    argerr(2, "client", "dir: pooled routes ({ pool = true }) need the app's directory")
  end
  return setmetatable({ app = app, dir = dir, cookies = {}, _tc = tc,
                        _ws = setmetatable({}, { __mode = "k" }),
                        _timeout = opts.timeout or 30 }, Client)
end

local NO_OVERRIDES = {}

-- Makes this client's app the state's current one (its scheduler, its overrides).
local function activate(self)
  if self._closed then error("the test client is closed", 3) end
  self._tc:activate()
  deps.use_overrides(self.app.overrides or NO_OVERRIDES)
end

-- Reads one response from conn (rest: bytes already received after the last one).
local NO_HEAD, HEAD = {}, { head = true }

local function read_response(self, conn, rest, head)
  local buf = rest or ""
  local popts = head and HEAD or NO_HEAD
  while true do
    local res, r2 = nil, "incomplete"
    if buf ~= "" then res, r2 = http.parse_response(buf, popts) end
    if res then return res, r2 end
    if r2 ~= "incomplete" then error("test client: " .. tostring(r2), 3) end
    local data, why = conn:recv(self._timeout)
    if not data then
      if why == "closed" and not popts.eof then
        popts = { head = head, eof = true }
      else
        error("test client: no complete response (" .. why .. ")", 3)
      end
    else
      buf = buf .. data
    end
  end
end

---client:request(method, path[, o]) -> res. o: query, headers, json, form, body, cookies.
---@return moonlet.testing.Response
---@param method string
---@param path string
---@param o table?
function Client:request(method, path, o)
  if type(method) ~= "string" then argerr(1, "request", "expected a method") end
  if type(path) ~= "string" or sub(path, 1, 1) ~= "/" then
    argerr(2, "request", "expected a path starting with /")
  end
  o = o or {}
  if type(o) ~= "table" then argerr(3, "request", "expected a table of options") end
  activate(self)
  method = upper(method)
  if not self._conn then self._conn, self._rest = self._tc:connect(), "" end
  local conn = self._conn
  conn:send(build(self, method, path, o))
  local res, rest = read_response(self, conn, self._rest, method == "HEAD")
  self._rest = rest
  local c = res.headers.connection
  if c and find(lower(c), "close", 1, true) then
    conn:close()
    self._conn = nil
  end
  take_cookies(self.cookies, res)
  return res
end

for _, m in ipairs({ "get", "post", "put", "patch", "delete", "head", "options" }) do
  local method = upper(m)
  Client[m] = function(self, path, o) return self:request(method, path, o) end
end

---Runs the app's startup hooks (raises if one fails).
---@return true
function Client:start()
  activate(self)
  if self._started then return true end
  local ok, err = self._tc:lifespan("startup")
  if not ok then error("on_startup hook failed: " .. tostring(err), 2) end
  self._started = true
  return true
end

---Runs the shutdown hooks (if started), frees the connections, the app state and its pool.
function Client:close()
  if self._closed then return end
  if self._started then
    activate(self)
    self._tc:lifespan("shutdown")
  end
  self._closed = true
  -- the client's ends first: their handles close with the app's (no loop runs later)
  if self._conn then self._conn:close() end
  self._conn = nil
  for ws in pairs(self._ws) do
    ws.closed = true
    ws.conn:close()
  end
  self._tc:close()
end

---------------------------------------------------------------------------
-- WebSocket: real frames, masked as a client's must be
---------------------------------------------------------------------------

---A WebSocket the test client opened (client:websocket).
---@class moonlet.testing.WebSocket
local WS = {}
WS.__index = WS

local function frame(opcode, data, fin)
  local n = #data
  local head = { char(bor(fin == false and 0 or 0x80, opcode)) }
  if n < 126 then
    head[2] = char(bor(0x80, n))
  elseif n < 65536 then
    head[2] = char(0x80 + 126, rshift(n, 8), band(n, 0xff))
  else
    local b = {}
    for i = 7, 0, -1 do b[#b + 1] = char(band(math.floor(n / 2 ^ (8 * i)), 0xff)) end
    head[2] = char(0x80 + 127) .. concat(b)
  end
  local key = { math.random(0, 255), math.random(0, 255), math.random(0, 255),
                math.random(0, 255) }
  head[3] = char(key[1], key[2], key[3], key[4])
  local out = {}
  for i = 1, n do out[i] = char(bxor(byte(data, i), key[(i - 1) % 4 + 1])) end
  return concat(head) .. concat(out)
end

-- One frame from self.buf: fin, opcode, payload; or nil while incomplete.
local function parse_frame(buf)
  if #buf < 2 then return nil end
  local b1, b2 = byte(buf, 1, 2)
  local n, pos = band(b2, 0x7f), 3
  if n == 126 then
    if #buf < 4 then return nil end
    n, pos = byte(buf, 3) * 256 + byte(buf, 4), 5
  elseif n == 127 then
    if #buf < 10 then return nil end
    n = 0
    for i = 3, 10 do n = n * 256 + byte(buf, i) end
    pos = 11
  end
  if #buf < pos + n - 1 then return nil end
  return band(b1, 0x80) ~= 0, band(b1, 0x0f), sub(buf, pos, pos + n - 1), sub(buf, pos + n)
end

---The WebSocket handshake, then real masked frames: ws, or nil, res when refused.
---@return moonlet.testing.WebSocket|nil ws
---@return moonlet.testing.Response? res
---@param path string
---@param o table?
function Client:websocket(path, o)
  o = o or {}
  local headers = {}
  for k, v in pairs(o.headers or {}) do headers[k] = v end
  headers.Upgrade = "websocket"
  headers.Connection = "Upgrade"
  headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="
  headers["Sec-WebSocket-Version"] = "13"
  activate(self)
  local conn = self._tc:connect()
  conn:send(build(self, "GET", path, { headers = headers, query = o.query,
                                       cookies = o.cookies }))
  local res, rest = read_response(self, conn, "", false)
  if res.status ~= 101 then
    conn:close()
    return nil, res
  end
  local ws = setmetatable({ client = self, conn = conn, buf = rest, response = res }, WS)
  self._ws[ws] = true
  return ws
end

---Sends a text frame.
---@param text string
function WS:send(text)
  if self.closed then return nil, "closed" end
  self.conn:send(frame(0x1, tostring(text)))
  return true
end

---Sends a binary frame.
---@param data string?
function WS:send_binary(data)
  if self.closed then return nil, "closed" end
  self.conn:send(frame(0x2, data))
  return true
end

---The next message: data, "text" | "binary"; or nil, "closed", code once the server
---closed (its close is answered). Pings are answered with pongs on the way.
function WS:receive()
  if self.closed then return nil, "closed", self.code end
  local parts, kind = {}, nil
  while true do
    local fin, op, payload, rest = parse_frame(self.buf)
    if fin == nil then
      activate(self.client)
      local data = self.conn:recv(self.client._timeout)
      if not data then
        self.closed = true
        self.conn:close()
        return nil, "closed", self.code or 1006
      end
      self.buf = self.buf .. data
    else
      self.buf = rest
      if op == 0x8 then
        self.code = #payload >= 2 and byte(payload, 1) * 256 + byte(payload, 2) or 1005
        self.reason = sub(payload, 3)
        if not self.closing then self.conn:send(frame(0x8, sub(payload, 1, 2))) end
        self.closed = true
        self.conn:close()
        return nil, "closed", self.code
      elseif op == 0x9 then
        self.conn:send(frame(0xA, payload))
      elseif op == 0x1 or op == 0x2 or op == 0x0 then
        if op ~= 0x0 then kind = op == 0x1 and "text" or "binary" end
        parts[#parts + 1] = payload
        if fin then return concat(parts), kind end
      end
    end
  end
end

---Sends a close (code 1000 unless given) and waits for the server's.
---@param code integer?
function WS:close(code)
  if self.closed then return true end
  code = code or 1000
  self.closing = true
  self.conn:send(frame(0x8, char(rshift(code, 8), band(code, 0xff))))
  while not self.closed do
    local data = self:receive()
    if data == nil then break end
  end
  return true
end

return _M
