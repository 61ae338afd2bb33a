-- moonlet.redis: a Redis client (redis-py's asyncio client, lua-resty-redis, Lua-shaped).
--
--   local r = assert(moonlet.redis.connect("redis://127.0.0.1:6379/0"))
--   r:set("greeting", "hello")                 --> "OK"
--   r:get("greeting")                          --> "hello"   (a missing key: moonlet.null)
--   r:call("HSET", "user:1", "name", "ada")    --> 1
--   r:pipeline(function(p) p:incr("n"); p:get("n") end)   --> { 1, "1" }
--   local sub = r:subscribe("news")
--   for msg in sub:messages() do print(msg.channel, msg.data) end
--
-- In a coroutine route a call yields; in a pooled route, at app load or in a spec it
-- blocks its thread. The C side (core/clients/redis*.c) keeps, per Lua state and per URL,
-- one connection that every ordinary command shares (multiplexed: replies come back in
-- order), connections of their own for blocking commands (BLPOP, ...), and one per
-- subscription. Failures return nil, err: the server's error as it says it ("ERR ...",
-- "WRONGTYPE ..."), or "redis: ..." when the connection failed, timed out or was closed.
-- Misuse (a table as an argument, SUBSCRIBE through call) raises.
local core = require "moonlet.core"

local type, tostring, tonumber, error, select = type, tostring, tonumber, error, select
local setmetatable, ipairs = setmetatable, ipairs
local upper, match, gmatch, gsub = string.upper, string.match, string.gmatch, string.gsub
local char, find, fmt = string.char, string.find, string.format
local redis_client, redis_subscribe = core.redis_client, core.redis_subscribe

---moonlet.redis: a Redis client. Expected failures return nil, err; misuse raises.
---@class moonlet.redis
local _M = { _VERSION = "0.1.0" }

---What moonlet.redis.connect takes besides a URL.
---@class moonlet.redis.Options
---@field host? string an address, or a name /etc/hosts knows (default "127.0.0.1")
---@field port? integer default 6379
---@field user? string an ACL user (Redis 6+); needs password
---@field password? string sent with AUTH on every new connection
---@field db? integer SELECTed on every new connection (default 0)
---@field connect_timeout? number seconds (default 5; false: none)
---@field timeout? number seconds a command may wait for its reply (default 30; false: none;
---blocking commands and subscriptions have their own)

local DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT = 5, 30

-- Commands that block the server side of their connection: each gets a connection of its
-- own (XREAD and XREADGROUP when they carry BLOCK).
local BLOCKING = {
  BLPOP = true, BRPOP = true, BRPOPLPUSH = true, BLMOVE = true, BLMPOP = true,
  BZPOPMIN = true, BZPOPMAX = true, BZMPOP = true, WAIT = true, WAITAOF = true,
}
-- Commands that change the state of the connection every call shares: refused, with
-- what to do instead.
local REFUSED = {
  SUBSCRIBE = "use r:subscribe", PSUBSCRIBE = "use r:psubscribe",
  SSUBSCRIBE = "use r:subscribe", UNSUBSCRIBE = "use sub:close",
  PUNSUBSCRIBE = "use sub:close", SUNSUBSCRIBE = "use sub:close",
  MULTI = "put MULTI ... EXEC in r:pipeline", EXEC = "put MULTI ... EXEC in r:pipeline",
  DISCARD = "put MULTI ... EXEC in r:pipeline",
  WATCH = "use a script (EVAL) to check and set", UNWATCH = "use a script (EVAL)",
  SELECT = "give the db to connect", AUTH = "give the password to connect",
  HELLO = "moonlet.redis speaks RESP2", MONITOR = "use redis-cli monitor",
  QUIT = "use r:close", RESET = "use r:close",
}

local function argerr(fname, n, msg)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. msg .. ")", 3)
end

local function unescape(s)
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- redis://[[user]:password@]host[:port][/db][?timeout=s&connect_timeout=s] -> options
local function parse_url(url)
  local query
  url, query = match(url, "^([^?]*)%??(.*)$")
  local rest = match(url, "^rediss?://(.*)$")
  if not rest then return nil, "expected redis://[[user]:password@]host[:port][/db]" end
  if find(url, "^rediss://") then return nil, "rediss:// (TLS) is not supported" end
  local o = {}
  local auth, hostpart = match(rest, "^(.*)@([^@]*)$")
  if auth then
    local user, password = match(auth, "^([^:]*):(.*)$")
    if user then
      o.user = user ~= "" and unescape(user) or nil
      o.password = unescape(password)
    else
      o.password = unescape(auth)
    end
  else
    hostpart = rest
  end
  local hp, db = match(hostpart, "^([^/]*)/?(.*)$")
  local host, port = match(hp, "^%[(.*)%]:?(%d*)$")
  if not host then host, port = match(hp, "^([^:]*):?(%d*)$") end
  if not host then return nil, "bad host and port in " .. url end
  o.host = host ~= "" and host or nil
  o.port = port ~= "" and tonumber(port) or nil
  if db ~= "" then
    o.db = tonumber(db)
    if not o.db then return nil, "bad db number in " .. url end
  end
  for k, v in gmatch(query, "([^&=]+)=([^&]*)") do
    if k ~= "timeout" and k ~= "connect_timeout" then return nil, "unknown URL parameter " .. k end
    o[k] = tonumber(v)
    if not o[k] then return nil, k .. " must be a number of seconds" end
  end
  return o
end

local function seconds(v, default, name)
  if v == nil then return default end
  if v == false then return nil end
  if type(v) ~= "number" or v < 0 then argerr("connect", 1, name .. " must be a number of seconds >= 0") end
  return v
end

---A connection to a Redis server (moonlet.redis.connect): every call of this Lua state to
---the same URL shares its connections.
---@class moonlet.redis.Client
local Client = {}
local client_mt = { __index = Client }
local pipeline_mt = {}   -- r:pipeline's p: its __index is Pipeline (below)
_M.Client = Client

local C_CLIENTS_MAX = 256
local c_clients, n_c_clients = {}, 0   -- this state's C clients by URL (a connect's parse)

-- The C client for opts: URLs seen before skip the parsing.
local function c_client(opts)
  local c = c_clients[opts]
  if c then return c end
  local o = opts
  if type(opts) == "string" then
    local err
    o, err = parse_url(opts)
    if not o then argerr("connect", 1, err) end
  elseif type(opts) ~= "table" then
    argerr("connect", 1, "expected a redis:// URL or a table of options")
  end
  local host, port, db = o.host or "127.0.0.1", o.port or 6379, o.db or 0
  if type(host) ~= "string" then argerr("connect", 1, "host must be a string") end
  if type(port) ~= "number" or port < 1 or port > 65535 or port % 1 ~= 0 then
    argerr("connect", 1, "port must be an integer from 1 to 65535")
  end
  if type(db) ~= "number" or db < 0 or db % 1 ~= 0 then argerr("connect", 1, "db must be an integer >= 0") end
  if o.user ~= nil and o.password == nil then argerr("connect", 1, "a user needs a password") end
  local user, password = o.user and tostring(o.user), o.password and tostring(o.password)
  local key = fmt("%s:%d/%d %q %q", host, port, db, user or "", password or "")
  c = redis_client(key, host, port, user, password, db,
    seconds(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT, "connect_timeout"),
    seconds(o.timeout, DEFAULT_TIMEOUT, "timeout"))
  if type(opts) == "string" and n_c_clients < C_CLIENTS_MAX then
    c_clients[opts] = c
    n_c_clients = n_c_clients + 1
  end
  return c
end

---moonlet.redis.connect(url_or_opts) -> client, or nil, err when the server cannot be
---reached (nor authenticated to). Connections are kept per Lua state: connecting again to
---the same URL is cheap.
---@param opts string|moonlet.redis.Options "redis://[[user]:password@]host[:port][/db][?timeout=s&connect_timeout=s]"
---@return moonlet.redis.Client|nil client
---@return string? err
function _M.connect(opts)
  local c = c_client(opts)
  if not c:ready() then   -- the first connect of this state, or after the connection broke
    local ok, err = c:call(false, "PING")
    if not ok then return nil, err end
  end
  return setmetatable({ _c = c }, client_mt)
end

local function check_name(cmd)
  if type(cmd) ~= "string" then argerr("call", 1, "expected a command name") end
  local name = upper(cmd)
  local why = REFUSED[name]
  if why then error("moonlet.redis: " .. name .. " is not for r:call: " .. why, 3) end
  return name
end

local function blocks(name, ...)
  if BLOCKING[name] then return true end
  if name == "XREAD" or name == "XREADGROUP" then
    for i = 1, select("#", ...) do
      local a = select(i, ...)
      if type(a) == "string" and upper(a) == "BLOCK" then return true end
    end
  end
  return false
end

---r:call(cmd, ...) -> the reply: a status or bulk string as a string, an integer as a
---number, an array as an array, a nil reply as moonlet.null; nil, err when Redis answers
---an error ("ERR ...") or the connection fails ("redis: ...").
---@param cmd string
---@param ... string|number
---@return any reply
---@return string? err
function Client:call(cmd, ...)
  local name = check_name(cmd)
  return self._c:call(blocks(name, ...), cmd, ...)
end

---r:pipeline(fn): fn(p) queues commands (p:set(...), p:call(...)), then they all go in one
---write and come back in one array: replies in order, an error in place as { err = "..." }.
---nil, err when the connection failed. MULTI and EXEC may go in it.
---@param fn fun(p: moonlet.redis.Pipeline)
---@return any[]|nil replies
---@return string? err
function Client:pipeline(fn)
  if type(fn) ~= "function" then argerr("pipeline", 1, "expected a function(p)") end
  local p = setmetatable({}, pipeline_mt)
  fn(p)
  return self._c:pipeline(p)
end

-- MULTI ... EXEC in one pipeline is one write on one connection: a transaction.
local IN_PIPELINE = { MULTI = true, EXEC = true, DISCARD = true }

-- What a closed client's calls find: raises on any use.
local closed = setmetatable({}, { __index = function() error("the redis client is closed", 3) end })

---r:close(): this client is done (its calls raise after); the connections stay for the
---state's other clients of the same URL.
function Client:close()
  self._c = closed
end

---A subscription (r:subscribe, r:psubscribe): messages in the order they came.
---@class moonlet.redis.Subscription
---@field err? string why messages() ended, when it did
local Sub = {}
local sub_mt = { __index = Sub }
_M.Subscription = Sub

---A message of a subscription.
---@class moonlet.redis.Message
---@field channel string
---@field data string
---@field pattern? string psubscribe: the pattern that matched

---sub:next([timeout]) -> the next message; nil, "timeout" after timeout seconds; nil,
---"closed" after sub:close(); nil, "redis: ..." when the connection was lost.
---@param timeout? number seconds
---@return moonlet.redis.Message|nil msg
---@return string? err
function Sub:next(timeout)
  return self._s:next(timeout)
end

---for msg in sub:messages() do ... end: ends when the subscription does (sub.err says why).
---@return fun(): moonlet.redis.Message?
function Sub:messages()
  local s = self._s
  return function()
    local msg, err = s:next()
    if not msg then self.err = err end
    return msg
  end
end

---sub:close(): unsubscribes (its connection closes); a task waiting in next gets nil, "closed".
function Sub:close()
  self._s:close()
end

local function subscribe(self, pattern, fname, ...)
  local n = select("#", ...)
  if n == 0 then argerr(fname, 1, "expected a channel") end
  for i = 1, n do
    if type(select(i, ...)) ~= "string" then argerr(fname, i, "expected a string") end
  end
  local s, err = redis_subscribe(self._c, pattern, ...)
  if not s then return nil, err end
  return setmetatable({ _s = s }, sub_mt)
end

---r:subscribe(channel, ...) -> a subscription, once Redis confirmed every channel; nil, err.
---@param ... string channels
---@return moonlet.redis.Subscription|nil sub
---@return string? err
function Client:subscribe(...)
  return subscribe(self, false, "subscribe", ...)
end

---r:psubscribe(pattern, ...) -> a subscription to channels matching the patterns.
---@param ... string glob-style patterns ("news.*")
---@return moonlet.redis.Subscription|nil sub
---@return string? err
function Client:psubscribe(...)
  return subscribe(self, true, "psubscribe", ...)
end

---What r:pipeline's function gets: the same shortcuts, and p:call(cmd, ...).
---@class moonlet.redis.Pipeline
local Pipeline = {}
pipeline_mt.__index = Pipeline
_M.Pipeline = Pipeline

---p:call(cmd, ...): queues any command (its reply goes to its place in the array).
---@param cmd string
---@param ... string|number
function Pipeline:call(cmd, ...)
  if type(cmd) ~= "string" then argerr("call", 1, "expected a command name") end
  local name = upper(cmd)
  local why = REFUSED[name]
  if not why and blocks(name, ...) then why = "it would hold the shared connection: use r:call" end
  if why and not IN_PIPELINE[name] then
    error("moonlet.redis: " .. name .. " is not for a pipeline: " .. why, 2)
  end
  self[#self + 1] = { cmd, ... }
end

-- The shortcuts: r:get(k) is r:call("GET", k), and so on. Some turn the reply into what
-- Lua code wants (HGETALL: a table of field = value).
local SHORTCUTS = {
  "get", "set", "del", "incr", "incrby", "decr", "decrby", "expire", "pexpire", "ttl", "pttl",
  "exists", "mget", "mset", "setnx", "setex", "getset", "append", "strlen", "keys", "type",
  "hget", "hset", "hdel", "hgetall", "hincrby", "hmget", "hexists", "hkeys", "hvals", "hlen",
  "lpush", "rpush", "lpop", "rpop", "llen", "lrange", "lrem", "ltrim", "lindex",
  "blpop", "brpop",
  "sadd", "srem", "smembers", "sismember", "scard",
  "zadd", "zrange", "zrangebyscore", "zrem", "zscore", "zincrby", "zcard", "zrank",
  "publish", "ping", "flushdb", "dbsize", "eval", "evalsha", "xadd", "xrange", "xlen",
}
local function to_map(reply)
  if type(reply) ~= "table" then return reply end
  local t = {}
  for i = 1, #reply, 2 do t[reply[i]] = reply[i + 1] end
  return t
end
local AFTER = { hgetall = to_map }

for _, name in ipairs(SHORTCUTS) do
  local cmd = upper(name)
  local own = BLOCKING[cmd] or false
  local after = AFTER[name]
  if after then
    Client[name] = function(self, ...)
      local reply, err = self._c:call(own, cmd, ...)
      if reply == nil then return nil, err end
      return after(reply)
    end
  else
    Client[name] = function(self, ...) return self._c:call(own, cmd, ...) end
  end
  if own then
    Pipeline[name] = function(self, ...) return Pipeline.call(self, cmd, ...) end   -- raises
  else
    Pipeline[name] = function(self, ...) self[#self + 1] = { cmd, ... } end
  end
end

return _M
