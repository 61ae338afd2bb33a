-- What C calls: routes(app) when loading, dispatch(handler, req) for every request (on
-- the loop and on pool threads alike), resolve(name) for run_in_pool by name,
-- lifespan(app, phase) for the startup and shutdown hooks (on the loop only); event(app,
-- name, json) for ml_host_emit.
local moonlet = require "moonlet"
local App = require "moonlet.app"
local request = require "moonlet.request"
local core = require "moonlet.core"
local Validate = require "moonlet.validate"
local Stream = require "moonlet.stream"
local Websocket = require "moonlet.websocket"
local ErrorPage = require "moonlet.error_page"

local type, getmetatable, xpcall, tostring, require, error, select, ipairs =
  type, getmetatable, xpcall, tostring, require, error, select, ipairs
local find, sub, concat = string.find, string.sub, table.concat
local rawget, unpack, pcall = rawget, unpack, pcall
local traceback = debug.traceback
local http_error_mt, response_mt = moonlet.http_error_mt, moonlet.response_mt
local log, req_route, in_pool, sleep = core.log, core.req_route, core.in_pool, core.sleep
local deps = require "moonlet.deps"
local req_pooled, status_reason, req_make = core.req_pooled, core.status_reason, core.req_make
local handler_next, next_pooled   -- defined with the middleware below
local check_response              -- defined below result
local Schema = require "moonlet.schema"

local _M = {}

_M.req_mt = request.mt

-- A Lua function that declares no parameter (function() ... end) cannot read req: C runs it
-- without building one (dispatch).
local function takes_nothing(fn)
  local info = debug.getinfo(fn, "Su")
  return info.what == "Lua" and info.nparams == 0 and not info.isvararg
end

-- The app's routes as C wants them: { mask, methods, path, pooled, max_body, handler,
-- noreq }. The handler C calls is the route's own, wrapped once here by what the route's
-- options ask for; a route that asks for nothing runs its handler as it is, and one whose
-- handler takes no parameter gets no req (noreq).
function _M.routes(app)
  if not App.is_app(app) then
    error("app.lua must return the app (return moonlet.app{...}), got " .. type(app), 0)
  end
  local out = {}
  deps.use_overrides(app.overrides)
  -- middleware runs on the loop only: a pool thread's state runs the handler alone
  local chained = #app.middleware > 0 and not in_pool()
  for i, r in ipairs(app.routes) do
    local h, ws = r.handler, r.websocket
    if r.opts.response and core.dev_mode() then
      h = check_response(r.methods .. " " .. r.path, r.opts.response, h)
    end
    if ws then h = Websocket.handler(ws, h) end   -- answers 101, then runs the handler
    h = deps.wrap(deps.merge(app.deps, r.opts.deps), h,
                  r.validate and Validate.validator(r.validate))   -- validation first
    if ws then h = Websocket.check(ws, h) end   -- the handshake, before all of it
    local pooled, hop = r.pooled, false
    -- a WebSocket route has no HTTP response for middleware to see: they do not run
    if chained and not ws then
      h = _M.chain(app.middleware, r.pooled and next_pooled or handler_next(h))
      pooled, hop = false, r.pooled
    end
    out[i] = { mask = r.mask, methods = r.methods, path = r.path, pooled = pooled,
               pool_hop = hop, max_body = r.opts.max_body, handler = h,
               noreq = not pooled and takes_nothing(h) }
  end
  -- app:static: GET and HEAD routes C serves itself (no handler): the prefix (a redirect
  -- to prefix/) and prefix/{path:path}
  local get_head = App.METHOD_BITS.GET + App.METHOD_BITS.HEAD
  for _, s in ipairs(app.statics) do
    local paths = { s.prefix .. "/{path:path}" }
    if s.prefix ~= "" then paths[2] = s.prefix end
    for _, path in ipairs(paths) do
      out[#out + 1] = { mask = get_head, methods = "GET,HEAD", path = path,
                        static_root = s.root, prefix_len = #s.prefix, index = s.index,
                        max_age = s.max_age }
    end
  end
  -- /openapi.json and /docs: the document is built here, once per load, on the loop only
  -- (a pool or executor thread's state never loads moonlet.openapi)
  if not in_pool() then
    for _, e in ipairs(require("moonlet.openapi").routes(app, App.METHOD_BITS.GET)) do
      if chained then e.handler = _M.chain(app.middleware, handler_next(e.handler)) end
      out[#out + 1] = e
    end
  end
  return out
end

-- With middleware: what answers a request no route takes (C sets req._status to 404 or
-- 405, and req._allow), at the end of the chain like a route's handler. nil without any.
function _M.unrouted(app)
  if #app.middleware == 0 or in_pool() then return nil end
  return _M.chain(app.middleware, function(req)
    local status = req._status
    local headers = {}
    if status == 405 then headers.allow = req._allow end
    return { status = status, body = { detail = status_reason(status) }, headers = headers }
  end)
end

local function on_error(e)
  if getmetatable(e) == http_error_mt then return e end
  -- not a tail call: level 1 stays this function, so level 2 is where the error was
  -- raised (the handler itself for a runtime error)
  local tb = traceback(tostring(e), 2)
  return tb
end

local internal_error = ErrorPage.internal_error

-- What a handler returned -> status, body, headers. A lone value is the body (`return 42`
-- is the JSON 42); two or more are status, body[, headers], the status checked in C.
local stream_mt = Stream.mt

local function result(n, a, b, c)
  if n >= 2 then return a, b, c end
  local mt = getmetatable(a)
  if mt == response_mt then return a.status or 200, a.body, a.headers end
  if mt == stream_mt then return a.status, a, a.headers end   -- moonlet.stream / sse
  return 200, a, nil
end

-- --reload: a route's 200 table body is checked against its `response` schema; a mismatch
-- is logged as an error with the route and what is wrong, the response is left as it is.
local function check_result(label, s, n, ...)
  local status, body = result(n, ...)
  if status ~= 200 or type(body) ~= "table" or getmetatable(body) == stream_mt then return end
  Schema.reset()
  Schema.push("response")
  s.check(body)
  Schema.pop()
  local errs = Schema.errors()
  if not errs then return end
  local lines = {}
  for i, e in ipairs(errs) do
    local loc = {}
    for j, k in ipairs(e.loc) do loc[j] = tostring(k) end
    lines[i] = concat(loc, ".") .. ": " .. e.msg
  end
  log("error", label .. ": the response does not match the route's response schema: "
               .. concat(lines, "; "))
end

local function pass(label, s, ...)
  check_result(label, s, select("#", ...), ...)
  return ...
end

check_response = function(label, s, h)
  return function(req) return pass(label, s, h(req)) end
end

-- Runs the deferred functions of `when = "handler"` (see request.lua), newest first, with
-- err; returns the first error one raised, or nil.
local function run_on_return(w, err)
  local d, failed = w.defer, nil
  w.on_return = nil
  for i = #d, 1, -1 do
    local entry = d[i]
    if type(entry) == "table" and not entry.ran then
      entry.ran = true
      local ok, e = xpcall(entry.fn, on_error, err)
      if not ok and failed == nil then failed = e end
    end
  end
  return failed
end

local function finish(req, ok, ...)
  local w = rawget(req, "_after")
  if w and w.on_return then
    local failed = run_on_return(w, not ok and (...) or nil)
    if failed ~= nil and ok then return finish(req, false, failed) end
  end
  if ok then return result(select("#", ...), ...) end
  local e = ...
  if w then w.error = e end
  if getmetatable(e) == http_error_mt then
    if rawget(req, "_ws_open") then   -- after a WebSocket's 101 it answers nothing: a failure
      log("error", (req_route(req._r) or "handler") .. ": " .. tostring(e)
                   .. " raised after the handshake (closed with 1011)")
    end
    return e.status, { detail = e.detail }, e.headers
  end
  log("error", (req_route(req._r) or "handler") .. ": " .. e)
  -- after a WebSocket's 101 nothing reads it; in development mode it carries the error
  if rawget(req, "_ws_open") then return 500, internal_error, nil end
  return ErrorPage.for_request(req, e)
end

-- A stream body (moonlet.stream, moonlet.sse) is written here, in pieces, by stream.lua.
local function respond(req, status, body, headers)
  if type(body) == "table" and getmetatable(body) == stream_mt then
    return Stream.run(req, status, body, headers)
  end
  return status, body, headers
end

-- A handler that takes no req (a noreq route) ran: req is built only if something needs
-- it, a failure (its log line, the error page) or a stream (which writes through it).
local function finish_noreq(r, g, ok, ...)
  if ok then
    -- the usual case first, without result's call: one body without a metatable (a
    -- table, number, boolean or nil; a string has one, and goes through result)
    if select("#", ...) == 1 then
      local a = ...
      if getmetatable(a) == nil then return 200, a, nil end
    end
    local status, body, headers = result(select("#", ...), ...)
    if type(body) ~= "table" or getmetatable(body) ~= stream_mt then return status, body, headers end
    return respond(req_make(r, g), status, body, headers)
  end
  local req = req_make(r, g)
  return respond(req, finish(req, false, ...))
end

local function finish_req(req, ok, ...)
  return respond(req, finish(req, ok, ...))
end

-- Runs a handler in the request's coroutine; returns status, body, headers.
function _M.dispatch(handler, req)
  return finish_req(req, xpcall(handler, on_error, req))
end

-- dispatch for a noreq route's handler: C passes the request's record and generation (r,
-- g) instead of a req. Kept apart from dispatch, whose frame stays as small as it was: a
-- coroutine's stack starts at 40 slots and doubles (+320 bytes per waiting request) when a
-- handler's call to a primitive needs more.
function _M.dispatch_noreq(handler, r, g)
  return finish_noreq(r, g, xpcall(handler, on_error))
end

-- --- middleware (app:use) ---------------------------------------------------------------
-- A middleware is fn(req, next) -> res, res = { status, body, headers }: next(req) runs the
-- rest of the chain and the route (its errors already turned into responses: a handler
-- that raised gives a 500 res), and always returns a res whose headers is a table.

local function to_res(status, body, headers)
  return { status = status, body = body, headers = headers or {} }
end

-- the innermost next of a coroutine route: its handler, as dispatch runs it
handler_next = function(h)
  return function(req) return to_res(finish(req, xpcall(h, on_error, req))) end
end

-- the innermost next of a pooled route: the request goes to a pool thread (as received),
-- the handler's results come back; nil and why if they could not (logged already: a
-- result a thread cannot hand back, the app not loaded there)
next_pooled = function(req)
  local status, body, headers = req_pooled(req._r, req._g)
  if status == nil then return to_res(ErrorPage.for_request(req, body)) end
  return to_res(status, body, headers)
end

-- middleware #i returned res: raises unless it is a response
local function check_res(res, i)
  if type(res) ~= "table" or type(res.status) ~= "number" then
    error("middleware #" .. i .. " returned " .. type(res)
          .. ", not a response { status, body, headers }", 0)
  end
end

-- The handler C calls: the middleware around inner, each given the next one; built once
-- per route at load, so a request makes no closure. The first middleware is called by the
-- handler itself (one frame less).
function _M.chain(mws, inner)
  local nxt = inner
  for i = #mws, 2, -1 do
    local mw, after = mws[i], nxt
    nxt = function(req)
      local res = mw(req, after)
      check_res(res, i)
      return res
    end
  end
  local first, after = mws[1], nxt
  return function(req)
    local res = first(req, after)
    check_res(res, 1)
    return res.status, res.body, res.headers
  end
end

local function run_background(b)
  if b.pool then return moonlet.run_in_pool(b.fn, unpack(b, 1, b.n)) end
  return b.fn(unpack(b, 1, b.n))
end

-- A request's after-work (request.lua's after_work), started by C once the response is out
-- or the request was dropped (why: "client disconnected"): the deferred functions in
-- reverse order, each given the error (nil on success), then, if the handler succeeded,
-- the background tasks in order. Failures are logged with the route.
function _M.after(w, why)
  if in_pool() then sleep(0) end   -- let the thread's job return: the response goes first
  local err = w.error
  if err == nil then err = why end
  local d = w.defer
  if d then
    for i = #d, 1, -1 do
      local fn = d[i]
      if type(fn) == "table" then   -- a "handler" one: ran already, unless the handler
        fn = not fn.ran and fn.fn    -- was cancelled (its client left)
      end
      if fn then
        local ok, e = xpcall(fn, traceback, err)
        if not ok then log("error", w.route .. ": deferred function failed: " .. tostring(e)) end
      end
    end
  end
  local bg = w.background
  if bg and err == nil then
    for i = 1, #bg do
      local ok, e = xpcall(run_background, traceback, bg[i])
      if not ok then log("error", w.route .. ": background task failed: " .. tostring(e)) end
    end
  end
end

-- Runs the app's hooks for phase ("startup" or "shutdown") in order, in the task C
-- started for them. Startup stops at the first error: false, error with traceback.
-- Shutdown logs an error and goes on with the next hook; returns true.
-- A worker host (moonlet worker, serve --worker: core/host.c sets app._jobs_worker) starts
-- its job queues after the startup hooks and drains them before the shutdown hooks.
function _M.lifespan(app, phase)
  local worker = rawget(app, "_jobs_worker")
  if worker and phase == "shutdown" then require("moonlet.jobs")._drain(app, worker) end
  local hooks = phase == "startup" and app.startup_hooks or app.shutdown_hooks
  for _, fn in ipairs(hooks) do
    local ok, err = xpcall(fn, traceback, app)
    if not ok then
      if phase == "startup" then return false, tostring(err) end
      log("error", "on_shutdown hook failed: " .. tostring(err))
    end
  end
  if worker and phase == "startup" then
    local ok, err = pcall(require("moonlet.jobs")._serve, app, worker)
    if not ok then return false, tostring(err) end
  end
  return true
end

-- An event from the embedding C program (ml_host_emit, bridge/events.c), in a task C
-- spawned for it on the loop: the handler app:on_event registered for name gets the JSON
-- text decoded (nil when there is none); its errors are logged with their traceback.
function _M.event(app, name, text)
  local fn = app.event_handlers and app.event_handlers[name]
  if not fn then
    log("debug", "event " .. name .. ": the app has no on_event handler for it")
    return
  end
  local value, why
  if text ~= nil then
    value, why = core.json_decode(text)
    if why then return log("error", "event " .. name .. ": " .. why) end
  end
  local ok, err = xpcall(fn, traceback, value)
  if not ok then log("error", "on_event(\"" .. name .. "\") handler failed: " .. tostring(err)) end
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
