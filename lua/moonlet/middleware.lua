-- moonlet.middleware: constructors for app:use.
--   app:use(moonlet.middleware.cors{ origins = { "https://app.example" } })
--   app:use(moonlet.middleware.gzip{ min_size = 500 })
--   app:use(moonlet.middleware.request_id())
-- A middleware is fn(req, next) -> res, res = { status, body, headers } (see runtime.lua).
local core = require "moonlet.core"

local type, error, pairs, ipairs, tostring, tonumber, rawset =
  type, error, pairs, ipairs, tostring, tonumber, rawset
local concat, sort, lower, find, match, floor =
  table.concat, table.sort, string.lower, string.find, string.match, math.floor
local gzip, json_encode, random_id, req_log_id =
  core.gzip, core.json_encode, core.random_id, core.req_log_id
local is_stream = require("moonlet.stream").is_stream

---What a middleware's next(req) returns and the middleware returns in turn.
---@class moonlet.MiddlewareResponse
---@field status integer
---@field body any
---@field headers table<string, string|string[]>

---A middleware for app:use.
---@alias moonlet.Middleware fun(req: moonlet.Request, next: fun(req: moonlet.Request): moonlet.MiddlewareResponse): moonlet.MiddlewareResponse

---moonlet.middleware: constructors for app:use, and the header helpers they use.
---@class moonlet.middleware
---@field get_header fun(headers: table, name: string): any a header of a response's headers, any case
---@field set_header fun(headers: table, name: string, value: any) sets it (lower case), dropping a copy under another case
local _M = {}

-- --- response headers, whatever case the handler wrote them in -------------------------

-- The name under which headers holds `name` (any case), or nil.
local function header_key(headers, name)
  if headers[name] ~= nil then return name end
  for k in pairs(headers) do
    if type(k) == "string" and lower(k) == name then return k end
  end
  return nil
end

local function get_header(headers, name)
  local k = header_key(headers, name)
  return k and headers[k]
end

-- Sets headers[name] (lower case), dropping a copy under another case.
local function set_header(headers, name, value)
  local k = header_key(headers, name)
  if k and k ~= name then headers[k] = nil end
  headers[name] = value
end

-- Adds token to a comma-separated header (Vary) unless it is there.
local function add_token(headers, name, token)
  local cur = get_header(headers, name)
  if type(cur) == "table" then cur = concat(cur, ", ") end
  if cur == nil or cur == "" then
    set_header(headers, name, token)
    return
  end
  local want = lower(token)
  for t in (cur .. ","):gmatch("%s*([^,]-)%s*,") do
    if lower(t) == want or t == "*" then return end
  end
  set_header(headers, name, cur .. ", " .. token)
end

_M.get_header, _M.set_header = get_header, set_header

-- --- option checking ----------------------------------------------------------------------

local function check_options(fname, opts, accepted)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to '" .. fname .. "' (expected a table of options)", 3)
  end
  for k in pairs(opts) do
    if accepted[k] == nil then
      local names = {}
      for n in pairs(accepted) do names[#names + 1] = n end
      sort(names)
      error("bad argument #1 to '" .. fname .. "' (unknown option '" .. tostring(k)
            .. "'; accepted: " .. concat(names, ", ") .. ")", 3)
    end
  end
  return opts
end

local function string_list(fname, name, v, default)
  if v == nil then return default end
  if type(v) == "string" then v = { v } end
  local ok = type(v) == "table"
  if ok then
    for _, s in ipairs(v) do ok = ok and type(s) == "string" end
  end
  if not ok then
    error("bad argument #1 to '" .. fname .. "' (" .. name .. " must be a list of strings)", 3)
  end
  return v
end

local function set_of(list, fold)
  local s = {}
  for _, v in ipairs(list) do s[fold and lower(v) or v] = true end
  return s
end

-- --- CORS -----------------------------------------------------------------------------------
-- As Starlette's CORSMiddleware: preflights (OPTIONS with Origin and
-- Access-Control-Request-Method) are answered here, whatever the routes; other requests
-- with an allowed Origin get Access-Control-Allow-Origin (and the rest) on their response.

local SAFELISTED = { accept = true, ["accept-language"] = true, ["content-language"] = true,
                     ["content-type"] = true }
local ALL_METHODS = { "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT" }

---moonlet.middleware.cors{ origins = { "https://app.example" }, ... }: CORS headers and
---preflight answers (OPTIONS with Access-Control-Request-Method).
---@param opts {origins: string[], methods?: string[], headers?: string[], expose?: string[], credentials?: boolean, max_age?: integer}
---@return moonlet.Middleware
function _M.cors(opts)
  opts = check_options("cors", opts, { origins = 1, methods = 1, headers = 1, expose = 1,
                                       credentials = 1, max_age = 1 })
  local origins = string_list("cors", "origins", opts.origins, nil)
  if not origins or #origins == 0 then
    error("bad argument #1 to 'cors' (origins is required: { \"https://app.example\" } or "
          .. "{ \"*\" })", 2)
  end
  local methods = string_list("cors", "methods", opts.methods, { "GET" })
  local headers = string_list("cors", "headers", opts.headers, {})
  local expose = string_list("cors", "expose", opts.expose, {})
  local credentials = opts.credentials and true or false
  local max_age = opts.max_age or 600
  if type(max_age) ~= "number" or max_age < 0 or floor(max_age) ~= max_age then
    error("bad argument #1 to 'cors' (max_age must be a whole number of seconds)", 2)
  end
  local any_origin = set_of(origins)["*"] or false
  if any_origin and credentials then
    error("bad argument #1 to 'cors' (origins = { \"*\" } with credentials = true is "
          .. "refused: browsers reject it; list the origins)", 2)
  end
  local origin_ok = set_of(origins)
  local any_method = set_of(methods)["*"] or false
  if any_method then methods = ALL_METHODS end
  local method_ok = set_of(methods)
  local any_header = set_of(headers)["*"] or false
  local header_ok = set_of(headers, true)
  for h in pairs(SAFELISTED) do header_ok[h] = true end

  local allow_methods = concat(methods, ", ")
  local allow_headers
  do
    local list = {}
    for _, h in ipairs{ "Accept", "Accept-Language", "Content-Language", "Content-Type" } do
      list[#list + 1] = h
    end
    for _, h in ipairs(headers) do
      if h ~= "*" and not SAFELISTED[lower(h)] then list[#list + 1] = h end
    end
    allow_headers = concat(list, ", ")
  end
  local expose_headers = #expose > 0 and concat(expose, ", ") or nil

  local function allowed(origin)
    return any_origin or origin_ok[origin] or false
  end

  local function preflight(req, origin)
    local h = {}
    local failures = {}
    if allowed(origin) then
      h["access-control-allow-origin"] = any_origin and "*" or origin
    else
      failures[#failures + 1] = "origin"
    end
    if not method_ok[req.headers["access-control-request-method"]] then
      failures[#failures + 1] = "method"
    end
    local asked = req.headers["access-control-request-headers"]
    if any_header and asked then
      h["access-control-allow-headers"] = asked
    else
      h["access-control-allow-headers"] = allow_headers
      if asked then
        for name in asked:gmatch("[^,%s]+") do
          if not header_ok[lower(name)] then
            failures[#failures + 1] = "headers"
            break
          end
        end
      end
    end
    if not any_origin then h.vary = "Origin" end
    h["access-control-allow-methods"] = allow_methods
    h["access-control-max-age"] = tostring(max_age)
    if credentials then h["access-control-allow-credentials"] = "true" end
    if #failures > 0 then
      h["content-type"] = "text/plain; charset=utf-8"
      return { status = 400, body = "Disallowed CORS " .. concat(failures, ", "), headers = h }
    end
    h["content-type"] = "text/plain; charset=utf-8"
    return { status = 200, body = "OK", headers = h }
  end

  return function(req, next)
    local origin = req.headers.origin
    if not origin then return next(req) end
    if req.method == "OPTIONS" and req.headers["access-control-request-method"] then
      return preflight(req, origin)
    end
    local res = next(req)
    if not allowed(origin) then return res end
    local h = res.headers
    -- a request with cookies gets its origin back, never "*" (Starlette does the same)
    if any_origin and not req.headers.cookie then
      set_header(h, "access-control-allow-origin", "*")
    else
      set_header(h, "access-control-allow-origin", origin)
      add_token(h, "vary", "Origin")
    end
    if credentials then set_header(h, "access-control-allow-credentials", "true") end
    if expose_headers then set_header(h, "access-control-expose-headers", expose_headers) end
    return res
  end
end

-- --- gzip -------------------------------------------------------------------------------------

-- true if an Accept-Encoding value accepts gzip (a q=0 refuses it).
local function accepts_gzip(ae)
  if not ae then return false end
  for item in (lower(ae) .. ","):gmatch("%s*([^,]*),") do
    local coding, params = match(item, "^([^;%s]+)%s*(.*)$")
    if coding == "gzip" or coding == "x-gzip" or coding == "*" then
      local q = match(params or "", "q%s*=%s*([%d.]+)")
      return not q or tonumber(q) > 0
    end
  end
  return false
end
---accepts_gzip(accept_encoding) -> true if that Accept-Encoding value accepts gzip.
---@type fun(ae: string?): boolean
_M.accepts_gzip = accepts_gzip

---moonlet.middleware.gzip{ min_size = 500, level = 6 }: compresses responses of at least
---min_size bytes for clients that accept gzip.
---@param opts? {min_size?: integer, level?: integer}
---@return moonlet.Middleware
function _M.gzip(opts)
  opts = check_options("gzip", opts, { min_size = 1, level = 1 })
  local min_size = opts.min_size or 500
  local level = opts.level or 6
  if type(min_size) ~= "number" or min_size < 0 or floor(min_size) ~= min_size then
    error("bad argument #1 to 'gzip' (min_size must be a number of bytes >= 0)", 2)
  end
  if type(level) ~= "number" or level < 1 or level > 9 or floor(level) ~= level then
    error("bad argument #1 to 'gzip' (level must be an integer from 1 to 9)", 2)
  end
  return function(req, next)
    local res = next(req)
    local status, body, h = res.status, res.body, res.headers
    if status == 204 or status == 304 or body == nil then return res end
    if is_stream(body) then return res end   -- written in pieces: never compressed
    if get_header(h, "content-encoding") then return res end   -- never twice
    local ctype = get_header(h, "content-type")
    if type(ctype) == "string" and find(lower(ctype), "text/event-stream", 1, true) then
      return res
    end
    if type(body) ~= "string" then   -- what C would encode: JSON
      body = json_encode(body)
      if not ctype then set_header(h, "content-type", "application/json") end
    elseif not ctype then
      set_header(h, "content-type", "text/plain; charset=utf-8")
    end
    if #body < min_size then
      res.body = body
      return res
    end
    add_token(h, "vary", "Accept-Encoding")   -- the answer depends on it from here on
    if accepts_gzip(req.headers["accept-encoding"]) then
      body = gzip(body, level)
      set_header(h, "content-encoding", "gzip")
    end
    res.body = body
    return res
  end
end

-- --- request id -------------------------------------------------------------------------------

---moonlet.middleware.request_id{ header = "x-request-id" }: req.request_id (the client's,
---if sane, else a new one), in the log lines and in the response's header.
---@param opts? {header?: string}
---@return moonlet.Middleware
function _M.request_id(opts)
  opts = check_options("request_id", opts, { header = 1 })
  local name = opts.header or "x-request-id"
  if type(name) ~= "string" or not find(name, "^[%w!#$%%&'*+.^_`|~-]+$") then
    error("bad argument #1 to 'request_id' (header must be a header name)", 2)
  end
  name = lower(name)
  return function(req, next)
    local id = req.headers[name]
    -- kept when it is 1-200 visible characters that cannot spoof a log line
    if not id or #id > 200 or not find(id, "^[%w%-_.:/+=@]+$") then id = random_id() end
    rawset(req, "request_id", id)
    req_log_id(req._r, req._g, id)
    local res = next(req)
    set_header(res.headers, name, id)
    return res
  end
end

return _M
