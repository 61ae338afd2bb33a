-- What C calls: routes(app) when loading, dispatch(handler, req) for every request.
local moonlet = require "moonlet"
local App = require "moonlet.app"
local request = require "moonlet.request"
local core = require "moonlet.core"

local type, getmetatable, xpcall, tostring = type, getmetatable, xpcall, tostring
local traceback = debug.traceback
local http_error_mt, response_mt = moonlet.http_error_mt, moonlet.response_mt
local log, route_of = core.log, core.route_of

local _M = {}

_M.req_mt = request.mt

-- The app's routes as C wants them: { mask, methods, path, handler }.
function _M.routes(app)
  if not App.is_app(app) then
    error("app.lua must return the app (return moonlet.app{...}), got " .. type(app), 0)
  end
  return app.routes
end

local function on_error(e)
  if getmetatable(e) == http_error_mt then return e end
  return traceback(tostring(e), 2)
end

local internal_error = { detail = "Internal Server Error" }

-- Runs a handler in the request's coroutine; returns status, body, headers.
function _M.dispatch(handler, req)
  local ok, a, b, c = xpcall(handler, on_error, req)
  if ok then
    if type(a) == "number" then return a, b, c end
    if getmetatable(a) == response_mt then return a.status or 200, a.body, a.headers end
    return 200, a, nil
  end
  if getmetatable(a) == http_error_mt then
    return a.status, { detail = a.detail }, a.headers
  end
  log("error", (route_of(req._t) or "handler") .. ": " .. a)
  return 500, internal_error, nil
end

return _M
