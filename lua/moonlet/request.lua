-- The req object handlers receive. C fills method, path, params (when the route has any)
-- and body; query, headers and the parsed bodies are built on first use and cached.
local core = require "moonlet.core"

local type, rawset, rawget, setmetatable = type, rawset, rawget, setmetatable
local tonumber, char, gsub, find, sub = tonumber, string.char, string.gsub, string.find, string.sub
local req_url, req_headers, json_decode = core.req_url, core.req_headers, core.json_decode

local _M = {}

local function hexchar(h)
  return char(tonumber(h, 16))
end

-- Percent-decodes s; "+" is a space in query strings and forms.
local function unescape(s)
  if find(s, "+", 1, true) then s = gsub(s, "+", " ") end
  if find(s, "%", 1, true) then s = gsub(s, "%%(%x%x)", hexchar) end
  return s
end
_M.unescape = unescape

-- "a=1&b=2&a=3" -> { a = { "1", "3" }, b = "2" }: a repeated key becomes a list.
local function parse_urlencoded(s)
  local t = {}
  if not s or s == "" then return t end
  for pair in s:gmatch("[^&]+") do
    local eq = find(pair, "=", 1, true)
    local k, v
    if eq then
      k, v = unescape(sub(pair, 1, eq - 1)), unescape(sub(pair, eq + 1))
    else
      k, v = unescape(pair), ""
    end
    local old = t[k]
    if old == nil then
      t[k] = v
    elseif type(old) == "table" then
      old[#old + 1] = v
    else
      t[k] = { old, v }
    end
  end
  return t
end
_M.parse_urlencoded = parse_urlencoded

local methods = {}
local empty_params_mt = { __newindex = function(t, k, v) rawset(t, k, v) end }

-- The lazy fields. Each is computed once, then stored in the req table itself.
local lazy = {
  query = function(req)
    local url = req.url
    local q = find(url, "?", 1, true)
    return parse_urlencoded(q and sub(url, q + 1) or "")
  end,
  headers = function(req)
    return req_headers(req._t, req._g)
  end,
  params = function()
    return setmetatable({}, empty_params_mt)
  end,
  url = function(req)
    return req_url(req._t, req._g)
  end,
}

local function index(req, key)
  local m = methods[key]
  if m then return m end
  local f = lazy[key]
  if f then
    local v = f(req)
    rawset(req, key, v)
    return v
  end
  return nil
end

_M.mt = { __index = index }

local function http_error(status, detail)
  -- late require: moonlet requires this module's users, not the other way round
  return require("moonlet").http_error(status, detail)
end

-- req:json() -> the decoded body; a body that is not strict JSON (RFC 8259), or is nested
-- deeper than a response can be, answers 400 {"detail":"Invalid JSON body"}.
function methods.json(req)
  local cached = rawget(req, "_json")
  if cached ~= nil then return cached end
  local v = json_decode(req.body)
  if v == nil then error(http_error(400, "Invalid JSON body"), 2) end
  rawset(req, "_json", v)
  return v
end

-- req:form() -> fields of an application/x-www-form-urlencoded body (repeated keys -> list).
function methods.form(req)
  local cached = rawget(req, "_form")
  if cached ~= nil then return cached end
  local ctype = req.headers["content-type"] or ""
  if ctype ~= "" and not find(ctype:lower(), "application/x-www-form-urlencoded", 1, true) then
    error(http_error(415, "Expected an application/x-www-form-urlencoded body"), 2)
  end
  local f = parse_urlencoded(req.body)
  rawset(req, "_form", f)
  return f
end

-- req:header(name) -> the value of one header (any case), or nil.
function methods.header(req, name)
  return req.headers[name:lower()]
end

return _M
