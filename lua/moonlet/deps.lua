-- Dependencies (FastAPI's Depends): route, router and app option deps = { name = fn }.
-- Each fn is called with req once per request, whatever the number of places naming it;
-- its value lands in req.deps.name. Inside one, req:dep(other) resolves another the same
-- way. app:override(fn, replacement) swaps one, for tests.
local type, error, pairs, ipairs, rawget, rawset, tostring, select, next =
  type, error, pairs, ipairs, rawget, rawset, tostring, select, next
local sort = table.sort
local new_tab = require "table.new"

local _M = {}

-- The app's overrides: { [fn] = replacement }. One app per Lua state: runtime.routes
-- points this at the app's table.
local overrides = {}
local NIL, RUNNING = {}, {}   -- cached nil; a dependency being resolved (cycles)

function _M.use_overrides(t)
  overrides = t
end

-- A request's cache { [fn] = value }, made on first need: by req:dep, or by the route's
-- deps (wrap) when a function comes twice. A route's deps that ran before it are entered
-- from req.deps, the one running (req._deps_at, see wrap) as running (cycles).
local function cache_of(req)
  local cache = rawget(req, "_deps_cache")
  if cache then return cache end
  cache = new_tab(0, 4)
  local at = rawget(req, "_deps_at")
  if at then
    local fns, names, values = at.fns, at.names, rawget(req, "deps")
    for j = 1, at.i - 1 do
      local v = values[names[j]]
      if v == nil then v = NIL end
      cache[fns[j]] = v
    end
    if at.i <= at.n then cache[fns[at.i]] = RUNNING end
  end
  rawset(req, "_deps_cache", cache)
  return cache
end

-- The value of fn for req: computed on the first call, the same value afterwards.
local function resolve(req, fn)
  local cache = cache_of(req)
  local v = cache[fn]
  if v == nil then
    cache[fn] = RUNNING
    v = (overrides[fn] or fn)(req)
    if v == nil then v = NIL end
    cache[fn] = v
  elseif v == RUNNING then
    error("dependency cycle: a dependency needs itself (through req:dep)", 3)
  end
  if v == NIL then return nil end
  return v
end
_M.resolve = resolve

-- Checks a deps option: a table of name = function. level: for error().
function _M.check(deps, what, level)
  if deps == nil then return end
  if type(deps) ~= "table" then
    error(what .. ": deps must be a table of name = function", level + 1)
  end
  for k, v in pairs(deps) do
    if type(k) ~= "string" or type(v) ~= "function" then
      error(what .. ": deps must map names to functions (deps." .. tostring(k) .. " is a "
            .. type(v) .. ")", level + 1)
    end
  end
end

-- Merges deps tables, outermost first: a name given again further in takes the inner
-- function. Returns nil when there is none.
function _M.merge(...)
  local out
  for i = 1, select("#", ...) do
    local d = select(i, ...)
    if d then
      out = out or {}
      for k, v in pairs(d) do out[k] = v end
    end
  end
  return out
end

-- handler wrapped to resolve deps (a name -> function table) into req.deps first, in
-- name order; validate(req), when given, runs before them: the errors it returns answer
-- 422 { detail = errors } (returned rather than raised: a 422 costs about what a 200 does).
-- One function per route, so a request goes through one frame before the handler. No
-- cache is made while each function comes once and none calls req:dep: req._deps_at (one
-- constant per position) says how far the deps are, for cache_of to start one.
function _M.wrap(deps, handler, validate)
  if not deps or next(deps) == nil then
    if not validate then return handler end
    return function(req)
      local detail = validate(req)
      if detail then return 422, { detail = detail } end
      return handler(req)
    end
  end
  local names = {}
  for k in pairs(deps) do names[#names + 1] = k end
  sort(names)
  local fns, seen, twice = {}, {}, false
  for i, k in ipairs(names) do
    fns[i] = deps[k]
    twice = twice or seen[fns[i]] ~= nil
    seen[fns[i]] = true
  end
  local n = #names
  local at = {}
  for i = 1, n + 1 do at[i] = { fns = fns, names = names, n = n, i = i } end
  return function(req)
    if validate then
      local detail = validate(req)
      if detail then return 422, { detail = detail } end
    end
    local values = new_tab(0, n)
    req.deps = values
    if twice then cache_of(req) end
    for i = 1, n do
      local fn = fns[i]
      req._deps_at = at[i]
      local v
      if rawget(req, "_deps_cache") then
        v = resolve(req, fn)
      else
        v = (overrides[fn] or fn)(req)
        local cache = rawget(req, "_deps_cache")   -- made while fn ran (req:dep)
        if cache then
          if v == nil then cache[fn] = NIL else cache[fn] = v end
        end
      end
      values[names[i]] = v
    end
    req._deps_at = at[n + 1]
    return handler(req)
  end
end

return _M
