-- The app object: collects routes. C builds the router from them (moonlet.runtime.routes).
-- A router (moonlet.router) collects routes the same way under a prefix; including it
-- copies them into the app (or into another router).
local type, error, ipairs, pairs, setmetatable, getmetatable, tostring =
  type, error, ipairs, pairs, setmetatable, getmetatable, tostring
local concat, upper, find, floor = table.concat, string.upper, string.find, math.floor
local deps = require "moonlet.deps"
local core = require "moonlet.core"
local Validate = require "moonlet.validate"
local Websocket = require "moonlet.websocket"
local schema = require "moonlet.schema"

---A route handler: returns body | status, body[, headers] (a table body is JSON), or a
---moonlet.response / moonlet.stream / moonlet.sse.
---@alias moonlet.Handler fun(req: moonlet.Request): any, any?, table?

---@class moonlet.AppOptions
---@field title? string
---@field version? string
---@field description? string
---@field deps? table<string, fun(req: moonlet.Request): any> dependencies of every route
---@field openapi? string|false the document's path ("/openapi.json"), false: none
---@field docs? string|false the docs page's path ("/docs"), false: none

---@class moonlet.RouterOptions
---@field prefix? string "/users"
---@field tags? string[]
---@field deps? table<string, fun(req: moonlet.Request): any>

---A route's options (all optional).
---@class moonlet.RouteOptions
---@field pool? boolean run on a pool thread (FastAPI's def)
---@field deps? table<string, fun(req: moonlet.Request): any> req.deps.name
---@field params? table<string, moonlet.Schema> path parameters, validated (422)
---@field query? table<string, moonlet.Schema> query parameters, validated (422)
---@field headers? table<string, moonlet.Schema> headers, validated (422)
---@field body? moonlet.Schema the JSON body, validated (422)
---@field form? table<string, moonlet.Schema> form fields, validated (422)
---@field response? moonlet.Schema the response, checked under --reload, documented
---@field max_body? integer bytes (the server's --max-body otherwise)
---@field summary? string
---@field description? string
---@field tags? string[]
---@field deprecated? boolean

---What route methods return: the route as the app keeps it.
---@class moonlet.Route
---@field path string
---@field methods string "GET,POST"

---The app: routes, middleware, lifespan hooks; APPDIR/app.lua returns it. Also the
---module moonlet.app (new, router, is_app).
---@class moonlet.App
---@field title string
---@field version string
---@field state table what the startup hooks set up
---@field get fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route app:get(path, [opts,] handler)
---@field head fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
---@field post fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
---@field put fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
---@field patch fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
---@field delete fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
---@field options fun(self: moonlet.App, path: string, opts: moonlet.RouteOptions|moonlet.Handler, handler?: moonlet.Handler): moonlet.Route
local _M = {}
local mt = { __index = _M }

---A router (moonlet.router): routes under a prefix, with tags and deps; app:include(r).
---@class moonlet.Router: moonlet.App

local METHOD_BITS = { GET = 1, HEAD = 2, POST = 4, PUT = 8, PATCH = 16, DELETE = 32, OPTIONS = 64 }
_M.METHOD_BITS = METHOD_BITS

-- Refuses options not in `accepted` (a list), naming the function.
local function check_options(opts, fname, accepted, level)
  for k in pairs(opts) do
    local known = false
    for _, a in ipairs(accepted) do
      if k == a then known = true end
    end
    if not known then
      error("bad argument #1 to '" .. fname .. "' (unknown option '" .. tostring(k)
            .. "'; accepted: " .. concat(accepted, ", ") .. ")", level + 1)
    end
  end
end

-- The path option `name` of moonlet.app (openapi, docs): the default when nil, nil when
-- false, else a path "/x" (no parameters, no trailing '/').
local function doc_path(opts, name, default)
  local p = opts[name]
  if p == nil then return default end
  if p == false then return nil end
  if type(p) ~= "string" or p:sub(1, 1) ~= "/" or #p < 2 or p:sub(-1) == "/"
     or p:find("[{}%s?#]") then
    error("bad argument #1 to 'app' (option " .. name .. " must be a path like \"" .. default
          .. "\" or false, got " .. tostring(p) .. ")", 3)
  end
  return p
end

---moonlet.app{ title = "Demo", version = "1.0.0", description = "...", deps = {...},
---             openapi = "/openapi.json", docs = "/docs" }
---@param opts? moonlet.AppOptions
---@return moonlet.App
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'app' (expected a table of options)", 2)
  end
  opts = opts or {}
  check_options(opts, "app", { "title", "version", "description", "deps", "openapi", "docs" },
                2)
  deps.check(opts.deps, "app", 2)
  for _, k in ipairs{ "title", "version", "description" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error("bad argument #1 to 'app' (option " .. k .. " must be a string)", 2)
    end
  end
  local openapi_path = doc_path(opts, "openapi", "/openapi.json")
  return setmetatable({
    title = opts.title or "moonlet",
    version = opts.version or "0.1.0",
    description = opts.description,
    openapi_path = openapi_path,                                -- nil: no document
    docs_path = openapi_path and doc_path(opts, "docs", "/docs"),   -- it reads the document
    deps = opts.deps,
    overrides = {},
    middleware = {},
    routes = {},
    statics = {},              -- app:static mounts (served by C, see runtime.routes)
    state = {},                -- what the startup hooks set up (see on_startup)
    startup_hooks = {},
    shutdown_hooks = {},
    event_handlers = {},       -- app:on_event: name -> fn (ml_host_emit)
  }, mt)
end

---app:use(function(req, next) ... local res = next(req) ... return res end): middleware,
---outermost first in the order added (see runtime.routes).
---@param mw fun(req: moonlet.Request, next: fun(req: moonlet.Request): moonlet.MiddlewareResponse): moonlet.MiddlewareResponse
---@return moonlet.App self
function _M:use(mw)
  if getmetatable(self) ~= mt then
    error("bad argument #1 to 'use' (call it on the app: app:use(fn))", 2)
  end
  if type(mw) ~= "function" then
    error("bad argument #1 to 'use' (expected a function(req, next))", 2)
  end
  self.middleware[#self.middleware + 1] = mw
  return self
end

---app:override(dep, replacement): wherever dep is a dependency (deps options, req:dep),
---replacement is called instead. For tests.
---@param dep function
---@param replacement? function nil undoes it
---@return moonlet.App self
function _M:override(dep, replacement)
  if type(dep) ~= "function" then
    error("bad argument #1 to 'override' (expected the dependency function)", 2)
  end
  if replacement ~= nil and type(replacement) ~= "function" then
    error("bad argument #2 to 'override' (expected a function, or nil to undo)", 2)
  end
  self.overrides[dep] = replacement
  return self
end

---@param x any
---@return boolean is_app true for what moonlet.app made (not a router)
function _M.is_app(x)
  return getmetatable(x) == mt
end

---Runs dir/app.lua in this state, dir on package.path first (its modules) and as the
---directory app:static's relative paths start from. Returns the app app.lua returns, or
---nil and the error (file:line for a syntax or runtime error). For the test client and the
---CLI's commands; `moonlet serve` loads in C (bridge/lstate.c).
---@param dir string the app's directory
---@return moonlet.App? app
---@return string? err
function _M.load_dir(dir)
  local entry = dir .. "/?.lua;" .. dir .. "/?/init.lua;"
  if not find(package.path, entry, 1, true) then package.path = entry .. package.path end
  local reg = debug.getregistry()
  local saved = reg["moonlet.appdir"]
  reg["moonlet.appdir"] = dir
  local chunk, err = loadfile(dir .. "/app.lua")
  if not chunk then
    reg["moonlet.appdir"] = saved
    return nil, err
  end
  local ok, app = pcall(chunk)
  reg["moonlet.appdir"] = saved
  if not ok then return nil, tostring(app) end
  if not _M.is_app(app) then
    return nil, dir .. "/app.lua must return the app (return moonlet.app{...}), got " .. type(app)
  end
  return app
end

local router_mt = { __index = _M }

---moonlet.router{ prefix = "/users", tags = { "users" }, deps = {...} }: routes added to
---it get the prefix, the tags and the deps when an app (or another router) includes it.
---@param opts? moonlet.RouterOptions
---@return moonlet.Router
function _M.router(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'router' (expected a table of options)", 2)
  end
  opts = opts or {}
  check_options(opts, "router", { "prefix", "tags", "deps" }, 2)
  deps.check(opts.deps, "router", 2)
  local tags = opts.tags
  if tags ~= nil then
    local ok = type(tags) == "table"
    if ok then
      for _, v in ipairs(tags) do ok = ok and type(v) == "string" end
      ok = ok and #tags > 0
    end
    if not ok then
      error("bad argument #1 to 'router' (tags must be a list of strings)", 2)
    end
  end
  local prefix = opts.prefix or ""
  local bad = type(prefix) ~= "string"
              or (prefix ~= "" and (prefix:sub(1, 1) ~= "/" or prefix:sub(-1) == "/"))
  if bad then
    error("bad argument #1 to 'router' (a prefix starts with '/' and does not end with one: "
          .. "\"/users\")", 2)
  end
  return setmetatable({ prefix = prefix, tags = tags, deps = opts.deps, routes = {},
                        is_router = true }, router_mt)
end

local function add(self, methods, path, opts, handler, level)
  local function argerr(n, what)
    error("bad argument #" .. n .. " to 'route' (" .. what .. ")", level + 1)
  end
  if type(methods) == "string" then methods = { methods } end
  if type(methods) ~= "table" or #methods == 0 then
    argerr(1, "expected a method or a list of methods")
  end
  -- in a router, "" is the prefix itself
  if type(path) ~= "string" or (path:sub(1, 1) ~= "/" and not (self.is_router and path == "")) then
    argerr(2, "expected a path starting with '/'")
  end
  if opts ~= nil and type(opts) ~= "table" then
    argerr(3, "expected an options table")
  end
  if type(handler) ~= "function" then
    argerr(4, "expected a handler function")
  end
  local mask, names = 0, {}
  for i, m in ipairs(methods) do
    local name = type(m) == "string" and upper(m) or nil
    local bit = METHOD_BITS[name]
    if not bit then
      argerr(1, "unknown method " .. tostring(m))
    end
    mask = mask + bit
    names[i] = name
  end
  opts = opts or {}
  deps.check(opts.deps, "route " .. path, level + 1)
  -- params/query/headers/body/form: compiled now, so a bad schema fails at load
  local spec, why = Validate.compile(opts, path)
  if why then argerr(3, why) end
  local max_body = opts.max_body
  if max_body ~= nil and (type(max_body) ~= "number" or max_body < 1 or max_body ~= floor(max_body)
                          or max_body > 2^53) then
    argerr(3, "option max_body must be a positive integer number of bytes, got "
              .. tostring(max_body))
  end
  for _, k in ipairs{ "summary", "description" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      argerr(3, "option " .. k .. " must be a string")
    end
  end
  if opts.deprecated ~= nil and type(opts.deprecated) ~= "boolean" then
    argerr(3, "option deprecated must be a boolean")
  end
  if opts.response ~= nil and not schema.is_schema(opts.response) then
    argerr(3, "option response must be a schema: moonlet.schema.object{...}")
  end
  if opts.tags ~= nil then
    local ok = type(opts.tags) == "table"
    for _, t in ipairs(ok and opts.tags or {}) do ok = ok and type(t) == "string" end
    if not ok then argerr(3, "option tags must be a list of strings") end
  end
  local ws   -- app:websocket's routes (their opts carry websocket = true)
  if opts.websocket then
    ws, why = Websocket.options(opts)
    if why then argerr(3, why) end
  end
  local r = { mask = mask, methods = concat(names, ","), method_list = names, path = path,
              handler = handler, opts = opts, pooled = opts.pool and true or false,
              validate = spec, websocket = ws }
  self.routes[#self.routes + 1] = r
  return r
end

---app:route(methods, path, [opts,] handler); methods is "GET" or { "GET", "POST" }.
---@param methods string|string[]
---@param path string "/items/{id:int}"
---@param opts moonlet.RouteOptions|moonlet.Handler the options, or the handler
---@param handler? moonlet.Handler
---@return moonlet.Route
function _M:route(methods, path, opts, handler)
  if handler == nil then opts, handler = nil, opts end
  return add(self, methods, path, opts, handler, 2)
end

---app:websocket(path, [opts,] handler): handler(ws, req) runs as a coroutine on the loop
---once the WebSocket handshake is answered (101); path parameters, validation and deps as
---for any route. opts: see moonlet.websocket's options (subprotocols, origins,
---idle_timeout, close_timeout, max_message). A GET route: other methods get 405.
---@param path string
---@param opts moonlet.WebSocketOptions|fun(ws: moonlet.WebSocket, req: moonlet.Request) the options, or the handler
---@param handler? fun(ws: moonlet.WebSocket, req: moonlet.Request)
---@return moonlet.Route
function _M:websocket(path, opts, handler)
  if handler == nil then opts, handler = nil, opts end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'websocket' (expected an options table)", 2)
  end
  local o = { websocket = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  return add(self, "GET", path, o, handler, 2)
end

-- A route's options as a router gives them: its tags first, then the route's; its deps
-- under the route's (a name the route gives again is the route's).
local function router_opts(r, opts)
  if not r.tags and not r.deps then return opts end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if r.tags then
    local tags = {}
    for _, t in ipairs(r.tags) do tags[#tags + 1] = t end
    for _, t in ipairs(opts.tags or {}) do tags[#tags + 1] = t end
    o.tags = tags
  end
  o.deps = deps.merge(r.deps, opts.deps)
  return o
end

---app:include(router) (or router:include(router)): adds the router's routes as they are
---now, each path under the router's prefix, with its tags and deps.
---@param r moonlet.Router
---@return moonlet.App self
function _M:include(r)
  if getmetatable(r) ~= router_mt then
    error("bad argument #1 to 'include' (expected a moonlet.router)", 2)
  end
  for _, route in ipairs(r.routes) do
    local path = r.prefix .. route.path
    if path == "" then
      error("include: a route with path \"\" needs a router with a prefix", 2)
    end
    add(self, route.method_list, path, router_opts(r, route.opts), route.handler, 2)
  end
  return self
end

---app:static("/static", "public", { max_age = 3600, index = "index.html" }): the files
---under dir (relative to APPDIR, or absolute) answer GET and HEAD at prefix/..., served by
---C without Lua (so without middleware). index = false: a directory is 404.
---@param prefix string
---@param dir string
---@param opts? {max_age?: integer, index?: string|false}
---@return moonlet.App self
function _M:static(prefix, dir, opts)
  local function argerr(n, what)
    error("bad argument #" .. n .. " to 'static' (" .. what .. ")", 3)
  end
  if getmetatable(self) ~= mt then
    error("bad argument #1 to 'static' (static files belong to the app, not to a router: "
          .. "app:static(prefix, dir))", 2)
  end
  if type(prefix) ~= "string" or prefix:sub(1, 1) ~= "/"
     or (prefix ~= "/" and prefix:sub(-1) == "/") or prefix:find("[{}]") then
    argerr(1, "a prefix starts with '/' and does not end with one: \"/static\", or \"/\"")
  end
  if type(dir) ~= "string" or dir == "" then argerr(2, "expected a directory") end
  if opts ~= nil and type(opts) ~= "table" then argerr(3, "expected an options table") end
  opts = opts or {}
  check_options(opts, "static", { "max_age", "index" }, 2)
  local max_age, index = opts.max_age, opts.index
  if max_age ~= nil and (type(max_age) ~= "number" or max_age < 0 or max_age ~= floor(max_age)
                         or max_age > 2^53) then
    argerr(3, "option max_age must be a whole number of seconds >= 0, got " .. tostring(max_age))
  end
  if index == nil then index = "index.html" end
  if index ~= false and (type(index) ~= "string" or index == "" or index:find("/", 1, true)
                         or index == "." or index == "..") then
    argerr(3, "option index must be a file name or false, got " .. tostring(index))
  end
  local root, why = core.static_dir(dir)
  if not root then argerr(2, why) end
  local p = prefix == "/" and "" or prefix
  for _, s in ipairs(self.statics) do
    if s.prefix == p then argerr(1, "static files are mounted at " .. prefix .. " already") end
  end
  self.statics[#self.statics + 1] = { prefix = p, root = root, dir = dir, max_age = max_age,
                                      index = index or nil }
  return self
end

local function add_hook(self, list, name, fn)
  if getmetatable(self) ~= mt then
    error("bad argument #1 to '" .. name .. "' (lifespan hooks belong to the app, "
          .. "not to a router)", 3)
  end
  if type(fn) ~= "function" then
    error("bad argument #1 to '" .. name .. "' (expected a function)", 3)
  end
  list[#list + 1] = fn
end

---app:on_startup(fn): fn(app) runs once per process, on the loop, as a coroutine (it may
---sleep, use the db and the HTTP client), before the server accepts its first connection;
---hooks run one after the other in the order they were added. Never in pool threads.
---@param fn fun(app: moonlet.App)
---@return moonlet.App self
function _M:on_startup(fn)
  add_hook(self, self.startup_hooks, "on_startup", fn)   -- not a tail call: level 3 is kept
  return self
end

---app:on_shutdown(fn): fn(app) runs on the loop at a graceful stop, after the last request
---and the background tasks requests spawned have finished (or when --reload retires it).
---@param fn fun(app: moonlet.App)
---@return moonlet.App self
function _M:on_shutdown(fn)
  add_hook(self, self.shutdown_hooks, "on_shutdown", fn)
  return self
end

---app:on_event(name, fn): fn(value) runs on the loop, as a coroutine (it may sleep, use the
---db, notify a moonlet.cond), each time the C program that embeds moonlet calls
---ml_host_emit(h, name, json) from any of its threads; value is the JSON decoded (nil when
---it passed none). One handler per name; its errors are logged with a traceback. Never in
---pool threads.
---@param name string
---@param fn fun(value: any)
---@return moonlet.App self
function _M:on_event(name, fn)
  if getmetatable(self) ~= mt then
    error("bad argument #1 to 'on_event' (event handlers belong to the app, not to a router)",
          2)
  end
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'on_event' (expected an event name)", 2)
  end
  if type(fn) ~= "function" then
    error("bad argument #2 to 'on_event' (expected a function)", 2)
  end
  if self.event_handlers[name] then
    error("bad argument #1 to 'on_event' (event " .. name .. " has a handler already)", 2)
  end
  self.event_handlers[name] = fn
  return self
end

for name in pairs(METHOD_BITS) do
  local method = name
  -- app:get(path, [opts,] handler) and the like
  _M[name:lower()] = function(self, path, opts, handler)
    if handler == nil then opts, handler = nil, opts end
    return add(self, method, path, opts, handler, 2)
  end
end

return _M
