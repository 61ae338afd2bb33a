-- The req object handlers receive. C makes it (core/bridge/request.c), for both kinds of route:
-- method, path, params (when the route has any) and body at once; url, query and headers
-- and cookies on first use, then cached in req. This module adds the methods.
local core = require "moonlet.core"

local rawset, rawget, setmetatable, error, require = rawset, rawget, setmetatable, error, require
local find, lower = string.find, string.lower
local req_form, req_parts, json_decode = core.req_form, core.req_parts, core.json_decode

local _M = {}

local methods = {}
local empty_params_mt = { __newindex = function(t, k, v) rawset(t, k, v) end }

-- The lazy fields: core's req_* functions read the request behind req._r while it is
-- open. Each is computed once, then stored in the req table itself. Fields made from the
-- request are added here and in core/bridge/request.c.
local lazy = {
  url = core.req_url,
  query = core.req_query,
  headers = core.req_headers,
  cookies = core.req_cookies,
}

local function index(req, key)
  local m = methods[key]
  if m then return m end
  local f = lazy[key]
  if f then
    local v = f(req._r, req._g)
    rawset(req, key, v)
    return v
  end
  if key == "params" then
    local v = setmetatable({}, empty_params_mt)
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

-- req:form() -> the fields of an application/x-www-form-urlencoded body (repeated keys ->
-- list), or of a multipart/form-data body: text fields as strings, files as
-- { filename, content_type, size, path } (their bytes are in a temporary file at path,
-- removed when the request ends). The multipart body was parsed as it arrived (C: upload.c).
function methods.form(req)
  local cached = rawget(req, "_form")
  if cached ~= nil then return cached end
  local f = req_parts(req._r, req._g)
  if f == nil then
    local ctype = lower(req.headers["content-type"] or "")
    if find(ctype, "multipart/form-data", 1, true) then   -- an empty body: never parsed
      error(http_error(400, "Malformed multipart body: missing the final boundary"), 2)
    end
    if ctype ~= "" and not find(ctype, "application/x-www-form-urlencoded", 1, true) then
      error(http_error(415, "Expected an application/x-www-form-urlencoded or "
                            .. "multipart/form-data body"), 2)
    end
    f = req_form(req.body)
  end
  rawset(req, "_form", f)
  return f
end

-- req:header(name) -> the value of one header (any case), or nil.
function methods.header(req, name)
  return req.headers[name:lower()]
end

return _M
