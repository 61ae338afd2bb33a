-- What C calls: routes(app) when loading, dispatch(handler, req) for every request (on
-- the loop and on pool threads alike), resolve(name) for run_in_pool by name,
-- lifespan(app, phase) for the startup and shutdown hooks (on the loop only).
local moonlet = require "moonlet"
local App = require "moonlet.app"
local request = require "moonlet.request"
local core = require "moonlet.core"

local type, getmetatable, xpcall, tostring, require, error, select, ipairs =
  type, getmetatable, xpcall, tostring, require, error, select, ipairs
local find, sub = string.find, string.sub
local traceback = debug.traceback
local http_error_mt, response_mt = moonlet.http_error_mt, moonlet.response_mt
local log, req_route = core.log, core.req_route

local _M = {}

_M.req_mt = request.mt

-- The app's routes as C wants them: { mask, methods, path, pooled, handler }. The handler
-- C calls is the route's own, wrapped once here by what the route's options ask for; a
-- route that asks for nothing runs its handler as it is.
function _M.routes(app)
  if not App.is_app(app) then
    error("app.lua must return the app (return moonlet.app{...}), got " .. type(app), 0)
  end
  local out = {}
  for i, r in ipairs(app.routes) do
    local h = r.handler
    out[i] = { mask = r.mask, methods = r.methods, path = r.path, pooled = r.pooled,
               handler = h }
  end
  return out
end

local function on_error(e)
  if getmetatable(e) == http_error_mt then return e end
  -- not a tail call: level 1 stays this function, so level 2 is where the error was
  -- raised (the handler itself for a runtime error)
  local tb = traceback(tostring(e), 2)
  return tb
end

local internal_error = { detail = "Internal Server Error" }

-- What a handler returned -> status, body, headers. A lone value is the body (`return 42`
-- is the JSON 42); two or more are status, body[, headers], the status checked in C.
local function result(n, a, b, c)
  if n >= 2 then return a, b, c end
  if getmetatable(a) == response_mt then return a.status or 200, a.body, a.headers end
  return 200, a, nil
end

local function finish(req, ok, ...)
  if ok then return result(select("#", ...), ...) end
  local e = ...
  if getmetatable(e) == http_error_mt then
    return e.status, { detail = e.detail }, e.headers
  end
  log("error", (req_route(req._r) or "handler") .. ": " .. e)
  return 500, internal_error, nil
end

-- Runs a handler in the request's coroutine; returns status, body, headers.
function _M.dispatch(handler, req)
  return finish(req, xpcall(handler, on_error, req))
end

-- Runs the app's hooks for phase ("startup" or "shutdown") in order, in the task C
-- started for them. Startup stops at the first error: false, error with traceback.
-- Shutdown logs an error and goes on with the next hook; returns true.
function _M.lifespan(app, phase)
  local hooks = phase == "startup" and app.startup_hooks or app.shutdown_hooks
  for _, fn in ipairs(hooks) do
    local ok, err = xpcall(fn, traceback, app)
    if not ok then
      if phase == "startup" then return false, tostring(err) end
      log("error", "on_shutdown hook failed: " .. tostring(err))
    end
  end
  return true
end

-- "module.function" -> the function (run_in_pool by name).
function _M.resolve(name)
  local dot = find(name, "%.[^.]*$")
  if not dot then
    error("run_in_pool: expected \"module.function\", got \"" .. name .. "\"", 0)
  end
  local mod = require(sub(name, 1, dot - 1))
  local fn = type(mod) == "table" and mod[sub(name, dot + 1)]
  if type(fn) ~= "function" then
    error("run_in_pool: " .. name .. " is not a function", 0)
  end
  return fn
end

return _M
