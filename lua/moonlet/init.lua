-- moonlet: the module handlers and apps use.
--   local moonlet = require "moonlet"
--   local app = moonlet.app{ title = "Demo" }
local core = require "moonlet.core"
local App = require "moonlet.app"
local cjson = require "cjson"

local setmetatable, getmetatable, type, tostring = setmetatable, getmetatable, type, tostring
local error, floor = error, math.floor

---The module handlers and apps use: `local moonlet = require "moonlet"`.
---@class moonlet
---@field app fun(opts?: moonlet.AppOptions): moonlet.App a new app (see moonlet.App.new)
---@field router fun(opts?: moonlet.RouterOptions): moonlet.Router routes under a prefix
---@field middleware moonlet.middleware cors, gzip, request_id
---@field schema moonlet.schema validation: route options query/params/headers/body
---@field sleep fun(seconds: number) waits without blocking the loop
---@field now fun(): number monotonic seconds
---@field null lightuserdata a JSON null: decodes from null, encodes to null
---@field spawn fun(fn: function, ...) runs fn(...) as a detached task
---@field cond fun(): moonlet.Cond a condition tasks wait on
---@field in_pool fun(): boolean true on a pool or executor thread
---@field shared moonlet.shared dictionaries shared by every thread
---@field json moonlet.json
---@field log moonlet.log
---@field db moonlet.db SQLite and PostgreSQL
---@field http moonlet.http the HTTP client
---@field redis moonlet.redis the Redis client
---@field jobs moonlet.jobs durable background jobs on Redis
---@field stream fun(producer: fun(send: moonlet.StreamSend), opts?: moonlet.StreamOptions): moonlet.Stream
---@field sse fun(producer: fun(emit: moonlet.SseEmit), opts?: moonlet.SseOptions): moonlet.Stream
---@field http_error_mt table the metatable of moonlet.http_error's values
---@field response_mt table the metatable of moonlet.response's values
local _M = { _VERSION = "0.1.0" }

_M.app = App.new
_M.router = App.router
_M.schema = require "moonlet.schema"   -- validation: route options query/params/headers/body
_M.sleep = core.sleep
_M.now = core.now
_M.null = cjson.null   -- a JSON null: decodes from null, encodes to null
_M.spawn = core.spawn
_M.cond = core.cond   -- c:wait(), c:notify_all(v), c:notify_one(v), c:waiting()

local select, unpack = select, unpack
local core_gather, core_timeout, core_run_in_pool = core.gather, core.timeout, core.run_in_pool

---moonlet.gather([opts,] f1, f2, ...) -> r1, r2, ... (the first result of each, in order;
---nil for a function that returned nothing or nil, err), the functions run concurrently.
---If one raises, the others are cancelled and gather raises that error; with
---{ return_errors = true } each failure is returned in its place as an error object
---(moonlet.is_error(v); v.error is the message with its traceback).
---@param ... {return_errors: boolean}|fun(): any options first (optional), then the functions
---@return any ...
function _M.gather(...)
  local n = select("#", ...)
  if type((...)) == "table" then n = n - 1 end
  local ok, res = core_gather(...)
  if not ok then error(res, 0) end
  return unpack(res, 1, n)
end

local task_error_mt = core.task_error_mt
task_error_mt.__tostring = function(e) return tostring(e.error) end
---@param v any
---@return boolean is_error true for the error objects of gather's { return_errors = true }
function _M.is_error(v)
  return getmetatable(v) == task_error_mt
end

local function timeout_result(done, ok, ...)
  if done == nil then return nil, "timeout" end
  if not ok then error((...), 0) end
  return ...
end

---moonlet.timeout(seconds, fn, ...) -> fn's results, or nil, "timeout" after cancelling
---whatever fn was waiting on.
---@param s number seconds
---@param fn function
---@param ... any fn's arguments
---@return any ...
function _M.timeout(s, fn, ...)
  return timeout_result(core_timeout(s, fn, ...))
end

-- core.run_in_pool gives true, results... | false, err[, code]
local function pool_result(ok, ...)
  if ok then return ... end
  local err, code = ...
  if code == "queue_full" then
    error(_M.http_error(503, "Service Unavailable", { ["retry-after"] = "1" }), 0)
  end
  error(err, 0)
end

---moonlet.run_in_pool(fn | "module.function", ...) -> fn's results, computed on an
---executor thread (--executor-size, apart from the pool of pooled routes; on a pool or
---executor thread fn simply runs there). fn must not use upvalues; arguments and results
---are copied. A full executor queue answers 503.
---@param fn function|string
---@param ... any
---@return any ...
function _M.run_in_pool(fn, ...)
  return pool_result(core_run_in_pool(fn, ...))
end
_M.in_pool = core.in_pool

---moonlet.shared.dict(name): a dictionary shared by the loop, every pool thread and worker.
---@class moonlet.shared
---@field dict fun(name: string): moonlet.SharedDict the dictionary called name
_M.shared = { dict = core.shared_dict }

local array_mt = core.array_mt
---moonlet.array(t[, n]): marks t as a JSON array, so an empty one encodes as [] (not {}).
---Its length is n, kept in t.n, or else its largest index (table.maxn): the nils in
---between encode as null, so moonlet.array{ nil, 5 } is [null,5].
---@generic T: table
---@param t? T
---@param n? integer
---@return T
function _M.array(t, n)
  if t ~= nil and type(t) ~= "table" then
    error("bad argument #1 to 'array' (expected a table)", 2)
  end
  t = t or {}
  if n ~= nil then
    if type(n) ~= "number" or n < 0 or floor(n) ~= n then
      error("bad argument #2 to 'array' (expected a length: an integer >= 0)", 2)
    end
    t.n = n
  end
  return setmetatable(t, array_mt)
end

---What moonlet.http_error makes: raise it to answer with its status.
---@class moonlet.HttpError
---@field status integer
---@field detail any
---@field headers? table<string, string>

local http_error_mt = { __tostring = function(e)
  return "HTTP " .. e.status .. ": " .. tostring(e.detail)
end }
_M.http_error_mt = http_error_mt

local status_reason = core.status_reason
---error(moonlet.http_error(404, "Item not found")) answers 404 {"detail": "Item not found"};
---without a detail, the status's reason phrase: {"detail": "Not Found"}.
---@param status integer 400-599
---@param detail? any the "detail" of the JSON body
---@param headers? table<string, string>
---@return moonlet.HttpError
function _M.http_error(status, detail, headers)
  if type(status) ~= "number" or status < 400 or status > 599 or floor(status) ~= status then
    error("bad argument #1 to 'http_error' (expected a status 400-599)", 2)
  end
  if headers ~= nil and type(headers) ~= "table" then
    error("bad argument #3 to 'http_error' (expected a headers table)", 2)
  end
  if detail == nil then detail = status_reason(status) end
  return setmetatable({ status = status, detail = detail, headers = headers }, http_error_mt)
end

local response_mt = {}
_M.response_mt = response_mt

---moonlet.response{ status = 201, headers = {...}, body = "..." | table }
---@param t {status?: integer, headers?: table<string, string|string[]>, body?: string|table}
---@return table response
function _M.response(t)
  if type(t) ~= "table" then
    error("bad argument #1 to 'response' (expected a table)", 2)
  end
  if t.status ~= nil and type(t.status) ~= "number" then
    error("bad argument #1 to 'response' (status must be a number)", 2)
  end
  return setmetatable(t, response_mt)
end

-- moonlet.stream(fn(send), opts) and moonlet.sse(fn(emit), opts): responses in pieces
-- (see lua/moonlet/stream.lua).
local Stream = require "moonlet.stream"
_M.stream = Stream.stream
_M.sse = Stream.sse

local json_decode = core.json_decode

-- moonlet.json.decode(text) -> the value; raises "invalid json at byte N: ..." on a text
-- that is not strict JSON (RFC 8259).
local function decode(text)
  local v, err = json_decode(text)
  if v == nil then error(err, 2) end
  return v
end

-- moonlet.cookie(name, value[, opts]) -> a Set-Cookie header value. opts: max_age
-- (seconds), expires (seconds since the epoch, or an HTTP date), path (default "/"),
-- domain, secure, http_only, same_site ("lax" by default, "strict", "none").
local cookie_attr = { lax = "Lax", strict = "Strict", none = "None" }
local find_, format_, floor_ = string.find, string.format, math.floor

local function cookie_check(fname, n, v, what, bad)
  if type(v) ~= "string" or find_(v, bad) then
    error(format_("bad argument #%d to '%s' (%s)", n, fname, what), 3)
  end
end

---moonlet.cookie(name, value[, opts]) -> a Set-Cookie header value.
---@param name string a token
---@param value string no control characters, no ';'
---@param opts? {max_age?: integer, expires?: number|string, path?: string|false, domain?: string, secure?: boolean, http_only?: boolean, same_site?: "lax"|"strict"|"none"|false}
---@return string set_cookie
function _M.cookie(name, value, opts)
  -- a name is an RFC 9110 token; a value or attribute has no control characters and no ';'
  cookie_check("cookie", 1, name,
               "a cookie name is a token: letters, digits and !#$%&'*+-.^_`|~",
               "[^%w!#%$%%&'%*%+%-%.%^_`|~]")
  if name == "" then
    error("bad argument #1 to 'cookie' (a cookie name is a token: not empty)", 2)
  end
  cookie_check("cookie", 2, value, "a cookie value has no control characters and no ';'", "[%c;]")
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #3 to 'cookie' (expected an options table)", 2) end
  local parts = { name .. "=" .. value }
  if opts.max_age ~= nil then
    local age = opts.max_age
    if type(age) ~= "number" or age ~= floor_(age) then
      error("bad argument #3 to 'cookie' (max_age is a whole number of seconds)", 2)
    end
    parts[#parts + 1] = format_("Max-Age=%d", age)
  end
  local expires = opts.expires
  if type(expires) == "number" then
    parts[#parts + 1] = "Expires=" .. os.date("!%a, %d %b %Y %H:%M:%S GMT", floor_(expires))
  elseif expires ~= nil then
    cookie_check("cookie", 3, expires, "expires is a number of seconds or an HTTP date", "[%c;]")
    parts[#parts + 1] = "Expires=" .. expires
  end
  local path = opts.path == nil and "/" or opts.path
  if path then
    cookie_check("cookie", 3, path, "path has no control characters and no ';'", "[%c;]")
    parts[#parts + 1] = "Path=" .. path
  end
  if opts.domain ~= nil then
    cookie_check("cookie", 3, opts.domain, "domain has no control characters and no ';'", "[%c;]")
    parts[#parts + 1] = "Domain=" .. opts.domain
  end
  if opts.secure then parts[#parts + 1] = "Secure" end
  if opts.http_only then parts[#parts + 1] = "HttpOnly" end
  local same_site = opts.same_site == nil and "lax" or opts.same_site
  if same_site then
    local attr = cookie_attr[same_site]
    if not attr then
      error("bad argument #3 to 'cookie' (same_site is \"lax\", \"strict\" or \"none\")", 2)
    end
    if attr == "None" and not opts.secure then
      error("bad argument #3 to 'cookie' (same_site = \"none\" needs secure = true: "
            .. "browsers drop it otherwise)", 2)
    end
    parts[#parts + 1] = "SameSite=" .. attr
  end
  return table.concat(parts, "; ")
end

---moonlet.json: strict JSON (RFC 8259).
---@class moonlet.json
---@field encode fun(v: any): string moonlet.array marks lists; moonlet.null is null
---@field decode fun(text: string): any raises "invalid json at byte N: ..."
---@field null lightuserdata
---@field array fun(t?: table, n?: integer): table moonlet.array
_M.json = {
  encode = core.json_encode,
  decode = decode,
  null = cjson.null,
  array = _M.array,
}

local log = core.log
---moonlet.log: lines in the server's log, at a level.
---@class moonlet.log
---@field debug fun(msg: any)
---@field info fun(msg: any)
---@field warn fun(msg: any)
---@field error fun(msg: any)
_M.log = {
  debug = function(msg) log("debug", tostring(msg)) end,
  info = function(msg) log("info", tostring(msg)) end,
  warn = function(msg) log("warn", tostring(msg)) end,
  error = function(msg) log("error", tostring(msg)) end,
}

-- moonlet.middleware (cors, gzip, request_id), moonlet.db (SQLite and PostgreSQL,
-- lua/moonlet/db.lua), moonlet.http (the HTTP client, lua/moonlet/http.lua), moonlet.redis
-- (lua/moonlet/redis.lua) and moonlet.jobs (durable background jobs on Redis streams,
-- lua/moonlet/jobs.lua; `moonlet worker` runs them) are loaded when first used: every
-- pool and executor thread makes a Lua state of its own, and a state that never uses them
-- does not pay for loading them.
local lazy = { middleware = "moonlet.middleware", db = "moonlet.db", http = "moonlet.http",
               redis = "moonlet.redis", jobs = "moonlet.jobs" }
-- Not cached in _M: the field stays whatever require gives (a spec's insulate block clears
-- package.loaded entries made inside it; a cached field would keep a stale instance).
setmetatable(_M, {
  __index = function(_, k)
    local name = lazy[k]
    if name == nil then return nil end
    return require(name)
  end,
})

return _M
