-- Dependencies (FastAPI's Depends): route, router and app option deps = { name = fn }.
-- Each fn is called with req once per request, whatever the number of places naming it;
-- its value lands in req.deps.name. Inside one, req:dep(other) resolves another the same
-- way. app:override(fn, replacement) swaps one, for tests.
local type, error, pairs, ipairs, rawget, rawset, tostring, select, next =
  type, error, pairs, ipairs, rawget, rawset, tostring, select, next
local sort = table.sort

local _M = {}

-- The app's overrides: { [fn] = replacement }. One app per Lua state: runtime.routes
-- points this at the app's table.
local overrides = {}
local NIL, RUNNING = {}, {}   -- cached nil; a dependency being resolved (cycles)

function _M.use_overrides(t)
  overrides = t
end

-- The value of fn for req: computed on the first call, the same value afterwards.
local function resolve(req, fn)
  local cache = rawget(req, "_deps_cache")
  if not cache then
    cache = {}
    rawset(req, "_deps_cache", cache)
  end
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
-- name order.
function _M.wrap(deps, handler)
  if not deps or next(deps) == nil then return handler end
  local names = {}
  for k in pairs(deps) do names[#names + 1] = k end
  sort(names)
  local fns = {}
  for i, k in ipairs(names) do fns[i] = deps[k] end
  local n = #names
  return function(req)
    local values = {}
    rawset(req, "deps", values)
    for i = 1, n do values[names[i]] = resolve(req, fns[i]) end
    return handler(req)
  end
end

return _M
