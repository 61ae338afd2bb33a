-- moonlet.http: the HTTP/1.1 client (httpx's AsyncClient, Lua-shaped).
--
--   local res, err = moonlet.http.get("http://127.0.0.1:8000/items/1", { timeout = 2 })
--   if not res then return 502, { detail = err } end
--   local item = res:json()
--
-- In a coroutine route a call yields; in a pooled route, at app load or in a spec it
-- blocks. This file checks arguments, parses the URL and writes the request bytes; the C
-- side (core/clients/httpc.c) resolves, connects, speaks TLS, pools connections and parses the
-- response. Expected failures return nil, "what: detail (where)"; misuse raises.
local core = require "moonlet.core"

local type, tostring, tonumber, pairs, ipairs, error = type, tostring, tonumber, pairs, ipairs, error
local setmetatable = setmetatable
local concat, sort = table.concat, table.sort
local find, match, lower, upper, fmt = string.find, string.match, string.lower, string.upper, string.format
local http_request, json_encode, json_decode = core.http_request, core.json_encode, core.json_decode

---moonlet.http: the HTTP/1.1 client. Expected failures return nil, err; misuse raises.
---@class moonlet.http
local _M = { _VERSION = "0.1.0" }

---Options of a request (moonlet.http.request takes method and url in them too).
---@class moonlet.http.Options
---@field method? string moonlet.http.request: "GET" by default
---@field url? string moonlet.http.request: http:// or https://
---@field headers? table<string, string>
---@field body? string|table a table is sent as JSON
---@field timeout? number seconds for the whole request
---@field connect_timeout? number seconds
---@field read_timeout? number seconds
---@field max_size? integer the largest response body accepted, in bytes
---@field verify? boolean check the server's certificate (https; default true)
---@field ca_file? string
---@field keepalive? boolean false: Connection: close

local USER_AGENT = "moonlet/" .. _M._VERSION
local DEFAULT_PORT = { http = 80, https = 443 }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true, TRACE = true }
local WITH_BODY = { POST = true, PUT = true, PATCH = true }

---What a request answers.
---@class moonlet.http.Response
---@field status integer
---@field headers table<string, string> lower-case names
---@field body string
local Response = {}
Response.__index = Response
_M.Response = Response

---res:json() -> the decoded body, or nil, "invalid json at byte N: ..." when it is not
---strict JSON.
---@return any value
---@return string? err
function Response:json()
  return json_decode(self.body)
end

-- Raises "bad argument #n to 'fname' (msg)" at the user's line, `depth` frames above the
-- caller of argerr (our wrappers never tail-call, so the count is exact).
local function argerr(fname, n, msg, depth)
  error(fmt("bad argument #%d to '%s' (%s)", n, fname, msg), depth + 2)
end

-- scheme, host (brackets removed), port, target ("/path?query"), host header value.
-- Raises on a URL moonlet cannot use.
local function parse_url(url, fname, depth)
  if type(url) ~= "string" then argerr(fname, 1, "expected a URL string, got " .. type(url), depth + 1) end
  local scheme, rest = match(url, "^(%a[%w+.-]*)://(.*)$")
  scheme = scheme and lower(scheme)
  if not DEFAULT_PORT[scheme] then
    argerr(fname, 1, "expected an http:// or https:// URL, got " .. fmt("%q", url), depth + 1)
  end
  local authority, target = match(rest, "^([^/?#]*)(.*)$")
  target = match(target, "^[^#]*")
  if target == "" then target = "/" elseif target:sub(1, 1) == "?" then target = "/" .. target end
  if find(target, "[%s%c]") then argerr(fname, 1, "the URL contains spaces or control characters", depth + 1) end
  if find(authority, "@", 1, true) then
    argerr(fname, 1, "credentials in URLs are not supported (send an authorization header)", depth + 1)
  end
  local host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
  if not host then
    host, port = match(authority, "^([%w.%-_]+):?(%d*)$")
    if not host then argerr(fname, 1, "bad host in URL " .. fmt("%q", url), depth + 1) end
  end
  port = port == "" and DEFAULT_PORT[scheme] or tonumber(port)
  if port < 1 or port > 65535 then argerr(fname, 1, "port out of range in URL " .. fmt("%q", url), depth + 1) end
  local hosthdr = find(host, ":", 1, true) and "[" .. host .. "]" or host
  if port ~= DEFAULT_PORT[scheme] then hosthdr = hosthdr .. ":" .. port end
  return scheme, lower(host), port, target, hosthdr
end

local function check_header(fname, name, value, depth)
  if type(name) ~= "string" or not match(name, "^[!#$%%&'*+.^_`|~%w-]+$") then
    argerr(fname, 1, "bad header name " .. tostring(name), depth + 1)
  end
  local tv = type(value)
  if tv == "number" then value = tostring(value)
  elseif tv ~= "string" then argerr(fname, 1, "header " .. name .. " must be a string", depth + 1) end
  if find(value, "[\r\n%z]") then argerr(fname, 1, "header " .. name .. " contains CR, LF or NUL", depth + 1) end
  return value
end

local NUMBER_OPTS = { "timeout", "connect_timeout", "read_timeout", "max_size" }

-- moonlet.http.request{ method =, url =, headers =, body =, timeout =, connect_timeout =,
--   read_timeout =, max_size =, ca_file =, verify =, keepalive = }
-- -> res { status, headers (lower-case names), body } with res:json(), or nil, err.
local function request(opts, depth)
  local fname = "request"
  if type(opts) ~= "table" then argerr(fname, 1, "expected a table of options", depth + 1) end
  local method = opts.method or "GET"
  if type(method) ~= "string" or not match(method, "^%a+$") then
    argerr(fname, 1, "bad method " .. tostring(method), depth + 1)
  end
  method = upper(method)
  local scheme, host, port, target, hosthdr = parse_url(opts.url, fname, depth + 1)
  for _, k in ipairs(NUMBER_OPTS) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v < 0 or v ~= v) then
      argerr(fname, 1, k .. " must be a non-negative number", depth + 1)
    end
  end
  if opts.ca_file ~= nil and type(opts.ca_file) ~= "string" then
    argerr(fname, 1, "ca_file must be a path", depth + 1)
  end
  local body, ctype = opts.body, nil
  if type(body) == "table" then
    body, ctype = json_encode(body), "application/json"
  elseif body ~= nil and type(body) ~= "string" then
    argerr(fname, 1, "body must be a string or a table (sent as JSON)", depth + 1)
  end

  local lines = { method .. " " .. target .. " HTTP/1.1" }
  local have = {}
  local headers = opts.headers
  if headers ~= nil and type(headers) ~= "table" then argerr(fname, 1, "headers must be a table", depth + 1) end
  if headers then
    local names = {}
    for k in pairs(headers) do names[#names + 1] = k end
    sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, name in ipairs(names) do
      local v, lname = headers[name], lower(tostring(name))
      if lname == "transfer-encoding" then argerr(fname, 1, "transfer-encoding cannot be set", depth + 1) end
      if lname ~= "content-length" then     -- always computed from the body
        if type(v) == "table" then
          for _, x in ipairs(v) do lines[#lines + 1] = name .. ": " .. check_header(fname, name, x, depth + 1) end
        else
          lines[#lines + 1] = name .. ": " .. check_header(fname, name, v, depth + 1)
        end
        have[lname] = true
      end
    end
  end
  if not have.host then lines[#lines + 1] = "Host: " .. hosthdr end
  if not have["user-agent"] then lines[#lines + 1] = "User-Agent: " .. USER_AGENT end
  if ctype and not have["content-type"] then lines[#lines + 1] = "Content-Type: " .. ctype end
  if body or WITH_BODY[method] then lines[#lines + 1] = "Content-Length: " .. #(body or "") end
  local keepalive = opts.keepalive ~= false
  if not keepalive and not have.connection then lines[#lines + 1] = "Connection: close" end
  lines[#lines + 1] = ""
  lines[#lines + 1] = body or ""

  local status, hdrs, rbody = http_request{
    host = host, port = port, tls = scheme == "https",
    verify = opts.verify ~= false, ca_file = opts.ca_file,
    wire = concat(lines, "\r\n"), label = method .. " " .. opts.url,
    connect_timeout = opts.connect_timeout, read_timeout = opts.read_timeout,
    timeout = opts.timeout, max_size = opts.max_size,
    head = method == "HEAD", idempotent = IDEMPOTENT[method] or false, keepalive = keepalive,
  }
  if not status then return nil, hdrs end
  return setmetatable({ status = status, headers = hdrs, body = rbody }, Response)
end

---moonlet.http.request{ method =, url =, headers =, body =, timeout =, ... } -> res | nil, err
---@param opts moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err "what: detail (where)"
function _M.request(opts)
  local res, err = request(opts, 1)
  return res, err
end

local function with(opts, fname, method, url, body, nbody)
  if opts ~= nil and type(opts) ~= "table" then argerr(fname, nbody and 3 or 2, "expected a table of options", 2) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.method, o.url = method, url
  if nbody then o.body = body end
  local res, err = request(o, 2)
  return res, err
end

---moonlet.http.get(url[, opts]) -> res | nil, err
---@param url string
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.get(url, opts)
  local res, err = with(opts, "get", "GET", url)
  return res, err
end

---moonlet.http.head(url[, opts]) -> res | nil, err
---@param url string
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.head(url, opts)
  local res, err = with(opts, "head", "HEAD", url)
  return res, err
end

---moonlet.http.delete(url[, opts]) -> res | nil, err
---@param url string
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.delete(url, opts)
  local res, err = with(opts, "delete", "DELETE", url)
  return res, err
end

---moonlet.http.post(url, body[, opts]) -> res | nil, err   (a table body is sent as JSON)
---@param url string
---@param body string|table|nil
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.post(url, body, opts)
  local res, err = with(opts, "post", "POST", url, body, true)
  return res, err
end

---moonlet.http.put(url, body[, opts]) -> res | nil, err
---@param url string
---@param body string|table|nil
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.put(url, body, opts)
  local res, err = with(opts, "put", "PUT", url, body, true)
  return res, err
end

---moonlet.http.patch(url, body[, opts]) -> res | nil, err
---@param url string
---@param body string|table|nil
---@param opts? moonlet.http.Options
---@return moonlet.http.Response|nil res
---@return string? err
function _M.patch(url, body, opts)
  local res, err = with(opts, "patch", "PATCH", url, body, true)
  return res, err
end

return _M
