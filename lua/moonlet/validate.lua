-- Validation of a request against its route's options (params, query, headers, body with
-- form): app.lua compiles the options when the route is added (compile), runtime.lua wraps
-- the handler with the result once at load (wrap). Invalid input raises 422 with every
-- error at once, in FastAPI's shape: {"detail": [{type, loc, msg, input[, ctx]}, ...]}.
local schema = require "moonlet.schema"
local core = require "moonlet.core"

local type, ipairs, error, tonumber, rawset, require =
  type, ipairs, error, tonumber, rawset, require
local find, match, gsub, lower = string.find, string.match, string.gsub, string.lower
local json_decode = core.json_decode
local reset, push, pop, fail, errors, check_fields, copy =
  schema.reset, schema.push, schema.pop, schema.fail, schema.errors, schema.check_fields,
  schema.copy

local _M = {}

-- how values are read (see schema.check_fields)
local STRINGS = { strings = true }
local HEADERS = { strings = true, split = true }
local FORM = { strings = true, empty = true }

-- a header field x_token is the header x-token (FastAPI converts underscores too)
local function header_key(name) return (gsub(lower(name), "_", "-")) end

local function scalar_only(list, what)
  for _, f in ipairs(list) do
    local t = f.schema.type
    if t == "object" or (what == "params" and t == "array") then
      return what .. ": field '" .. f.name .. "' cannot be an " .. t
    end
  end
end

-- compile(opts, path) -> what the route validates, or nil when it validates nothing;
-- nil, why when an option is wrong.
function _M.compile(opts, path)
  local p, q, h, b, form = opts.params, opts.query, opts.headers, opts.body, opts.form
  if p == nil and q == nil and h == nil and b == nil and form == nil then return nil end
  local spec, why = {}
  if p ~= nil then
    spec.params, why = schema.fields(p, "params")
    if not spec.params then return nil, why end
    for _, f in ipairs(spec.params) do
      local esc = gsub(f.name, "%p", "%%%0")
      if not find(path, "{" .. esc .. "[:}]") then
        return nil, "params: '" .. f.name .. "' is not a parameter of the path " .. path
      end
    end
    why = scalar_only(spec.params, "params")
    if why then return nil, why end
  end
  if q ~= nil then
    spec.query, why = schema.fields(q, "query")
    if not spec.query then return nil, why end
    why = scalar_only(spec.query, "query")
    if why then return nil, why end
  end
  if h ~= nil then
    spec.headers, why = schema.fields(h, "headers", header_key)
    if not spec.headers then return nil, why end
    why = scalar_only(spec.headers, "headers")
    if why then return nil, why end
  end
  if b ~= nil and not schema.is_schema(b) then
    return nil, "body must be a schema: moonlet.schema.object{...}"
  end
  if form ~= nil and type(form) ~= "boolean" then
    return nil, "form must be a boolean"
  end
  if form and (b == nil or b.type ~= "object") then
    return nil, "form = true needs body = moonlet.schema.object{...} (the form's fields)"
  end
  spec.body, spec.form = b, form
  return spec
end

-- The body: JSON (req:json() then returns the validated value) or, with form = true, a
-- form (req:form() returns it).
local function check_body(spec, req)
  local s = spec.body
  push("body")
  if spec.form then
    local v = s.check(req:form(), FORM)
    if v ~= nil then rawset(req, "_form", v) end
  elseif req.body == "" then
    if s.default ~= nil then rawset(req, "_json", copy(s.default_value))
    elseif s.optional then rawset(req, "_json_absent", true)
    else fail("missing", "Field required", nil) end
  else
    local v, err = json_decode(req.body)
    if v == nil then
      -- FastAPI: loc ["body", position], the position 0-based
      local at, why = match(err, "at byte (%d+): (.*)")
      push(tonumber(at) - 1)
      fail("json_invalid", "JSON decode error", {}, { error = why })
      pop()
    else
      v = s.check(v)
      if v ~= nil then rawset(req, "_json", v) end
    end
  end
  pop()
end

-- Validates req: converted values land in req.params, req.query, req.headers and the body.
-- Returns the list of errors, or nil. In FastAPI's order: path, query, header, body.
local function run(spec, req)
  reset()
  if spec.params then
    local t = req.params
    push("path"); check_fields(spec.params, t, t, STRINGS); pop()
  end
  if spec.query then
    local t = req.query
    push("query"); check_fields(spec.query, t, t, STRINGS); pop()
  end
  if spec.headers then
    local t = req.headers
    push("header"); check_fields(spec.headers, t, t, HEADERS); pop()
  end
  if spec.body then check_body(spec, req) end
  return errors()
end

-- validator(spec) -> validate(req): the list of errors, or nil (deps.wrap answers 422 with
-- them, before the deps run).
function _M.validator(spec)
  return function(req) return run(spec, req) end
end

return _M
