-- The req object handlers receive. C makes it (core/bridge/request.c), for both kinds of route:
-- method, path, params (when the route has any) and body at once; url, query and headers
-- and cookies on first use, then cached in req. This module adds the methods.
local core = require "moonlet.core"
local proxy = require "moonlet.proxy"

local rawset, rawget, setmetatable, error, require, type, select, getmetatable, pairs,
      tostring =
  rawset, rawget, setmetatable, error, require, type, select, getmetatable, pairs, tostring
local find, lower = string.find, string.lower
local req_form, req_parts, json_decode, req_after, req_route, req_header =
  core.req_form, core.req_parts, core.json_decode, core.req_after, core.req_route,
  core.req_header
local resolve = require("moonlet.deps").resolve

local _M = {}

---req's methods; its fields are in lua/moonlet/meta/request.lua (C makes them).
---@class moonlet.Request
local methods = {}
_M.methods = methods   -- req's methods, listed (the annotations spec walks them)
local empty_params_mt = { __newindex = function(t, k, v) rawset(t, k, v) end }

-- The lazy fields: core's req_* functions read the request behind req._r while it is
-- open. Each is computed once, then stored in the req table itself. Fields made from the
-- request are added here and in core/bridge/request.c.
local lazy = {
  url = core.req_url,
  query = core.req_query,
  headers = core.req_headers,
  cookies = core.req_cookies,
  client = proxy.client,     -- { host = "1.2.3.4", port = 5678 } (proxy.lua)
  scheme = proxy.scheme,     -- "http" ("https" over TLS), or what a trusted proxy says
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
  if key == "deps" then   -- a route without deps
    local v = {}
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

---req:json() -> the decoded body (validated, on a route with a body schema); a body that
---is not strict JSON (RFC 8259), or is nested deeper than a response can be, answers 400
---{"detail":"Invalid JSON body"}.
---@param req moonlet.Request
---@return any body
function methods.json(req)
  local cached = rawget(req, "_json")
  if cached ~= nil then return cached end
  -- a route whose body schema is optional, and no body
  if rawget(req, "_json_absent") then return nil end
  local v = json_decode(req.body)
  if v == nil then error(http_error(400, "Invalid JSON body"), 2) end
  rawset(req, "_json", v)
  return v
end

---req:form() -> the fields of an application/x-www-form-urlencoded body (repeated keys ->
---list), or of a multipart/form-data body: text fields as strings, files as
---{ filename, content_type, size, path } (their bytes are in a temporary file at path,
---removed when the request ends). The multipart body was parsed as it arrived (C: upload.c).
---@param req moonlet.Request
---@return table<string, any> fields
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

---req:dep(fn) -> the value of the dependency fn for this request (called once per request,
---see moonlet/deps.lua).
---@param req moonlet.Request
---@param fn fun(req: moonlet.Request): any
---@return any value
function methods.dep(req, fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'dep' (expected a function)", 2) end
  return resolve(req, fn)
end

-- The request's after-work (runtime.after runs it when the request has ended): created on
-- first use and handed to C, which starts it once the response is out.
-- Returns its list `name` ("defer", "background").
local function after_list(req, name)
  local w = rawget(req, "_after")
  if not w then
    w = { route = req_route(req._r) or "handler" }
    req_after(req._r, req._g, w)   -- raises for a finished request
    rawset(req, "_after", w)
  end
  local list = w[name]
  if not list then
    list = {}
    w[name] = list
  end
  return list
end

---req:defer(fn[, when]): fn(err) runs after the response has been sent (when = "response",
---the default) or as soon as the handler has returned or failed, before the response is
---made (when = "handler": a commit the client must be able to read back; if fn raises,
---the answer is a 500). Deferred functions run in reverse order; err is nil on success,
---else what the handler raised (or a reason: "client disconnected"). runtime.finish runs
---the "handler" ones (marked { fn }), runtime.after the rest.
---@param req moonlet.Request
---@param fn fun(err: any)
---@param when? "response"|"handler"
function methods.defer(req, fn, when)
  if type(fn) ~= "function" then error("bad argument #1 to 'defer' (expected a function)", 2) end
  if when ~= nil and when ~= "response" and when ~= "handler" then
    error("bad argument #2 to 'defer' (expected \"response\" or \"handler\")", 2)
  end
  local list = after_list(req, "defer")
  if when == "handler" then
    list[#list + 1] = { fn = fn }
    rawget(req, "_after").on_return = true
  else
    list[#list + 1] = fn
  end
end

---req:background([{ pool = true },] fn, ...): fn(...) runs after the response has been
---sent (and the deferred functions have run), on the loop, or with { pool = true } on an
---executor thread, as moonlet.run_in_pool runs it (fn is copied as it copies it). Only
---when the handler succeeded.
---@param req moonlet.Request
---@param opts {pool: boolean}|function|string the options, or else fn itself
---@param ... any fn (after opts) and its arguments
function methods.background(req, opts, ...)
  local fn, first = opts, 2
  local pool = false
  if type(opts) == "table" and getmetatable(opts) == nil then
    for k in pairs(opts) do
      if k ~= "pool" then
        error("bad argument #1 to 'background' (unknown option '" .. tostring(k)
              .. "'; accepted: pool)", 2)
      end
    end
    pool = opts.pool and true or false
    fn, first = ..., 3
  end
  if type(fn) ~= "function" and not (pool and type(fn) == "string") then
    error("bad argument #" .. (first - 1) .. " to 'background' (expected a function"
          .. (pool and " or \"module.function\")" or ")"), 2)
  end
  local list = after_list(req, "background")
  if first == 2 then
    list[#list + 1] = { fn = fn, pool = pool, n = select("#", ...), ... }
  else
    list[#list + 1] = { fn = fn, pool = pool, n = select("#", ...) - 1, select(2, ...) }
  end
end

---req:header(name) -> the value of one header (any case), or nil.
---Without req.headers made yet, only that header is read (no table).
---@param req moonlet.Request
---@param name string
---@return string? value
function methods.header(req, name)
  local hs = rawget(req, "headers")
  if hs then return hs[lower(name)] end   -- made already (or converted by validation)
  return req_header(req._r, req._g, lower(name))
end

return _M
