-- moonlet.openapi: the app's OpenAPI 3.1 document, built once from its routes when the app
-- is loaded (runtime.routes, on the loop's state only; again at every --reload), and the
-- routes that serve it: GET /openapi.json (the document, encoded once) and GET /docs (a
-- page that reads it, lua/moonlet/docs_page.lua). WebSocket routes and static mounts are
-- left out: OpenAPI describes HTTP operations.
local schema = require "moonlet.schema"
local core = require "moonlet.core"

local pairs, ipairs, setmetatable, unpack, error = pairs, ipairs, setmetatable, unpack, error
local gsub, find, sub, lower = string.gsub, string.find, string.sub, string.lower
local concat = table.concat
local array_mt = core.array_mt
local json_schema = schema.json_schema

local _M = {}

local function array(t) return setmetatable(t or {}, array_mt) end

-- Lua pattern classes -> ECMAScript regex classes (JSON Schema's pattern dialect)
local CLASSES = {
  a = "A-Za-z", d = "0-9", l = "a-z", u = "A-Z", s = "\\s", w = "A-Za-z0-9",
  x = "0-9A-Fa-f", p = "!-/:-@\\[-`{-~", c = "\\x00-\\x1f\\x7f",
}

-- A Lua pattern as an ECMAScript regex, or nil when it uses what a regex cannot say
-- (%b, %f, back references).
local function regex(p)
  local out, i, n, in_set = {}, 1, #p, false
  while i <= n do
    local c = sub(p, i, i)
    if c == "%" then
      local k = sub(p, i + 1, i + 1)
      local cls = CLASSES[lower(k)]
      if cls then
        local negate = k ~= lower(k)
        if in_set then
          if negate then return nil end
          out[#out + 1] = cls
        else
          out[#out + 1] = (negate and "[^" or "[") .. cls .. "]"
        end
      elseif find(k, "%w") or k == "" then
        return nil   -- %b, %f, %1...
      elseif find(k, "[%^%$\\%.%*%+%?%(%)%[%]{}|/]") or (in_set and k == "-") then
        out[#out + 1] = "\\" .. k   -- a regex (unicode mode) escapes only these
      else
        out[#out + 1] = k
      end
      i = i + 2
    else
      if in_set then
        if c == "]" and sub(p, i - 1, i - 1) ~= "[" and sub(p, i - 2, i - 1) ~= "[^" then
          in_set = false
        elseif c == "\\" then
          c = "\\\\"
        end
      elseif c == "[" then
        in_set = true
      elseif c == "-" then
        c = "*?"   -- Lua's lazy repetition
      elseif find(c, "[\\{}|/]") then
        c = "\\" .. c
      end
      out[#out + 1] = c
      i = i + 1
    end
  end
  return concat(out)
end
_M.regex = regex

-- The JSON Schema 2020-12 of a moonlet.schema, as OpenAPI 3.1 takes it: `example` becomes
-- `examples` (a list), a Lua pattern a regex (kept as x-lua-pattern when it has none).
local function oas_schema(s)
  local js = json_schema(s)
  local function fix(t)
    if t.example ~= nil then
      t.examples = array{ t.example }
      t.example = nil
    end
    if t.pattern then
      local re = regex(t.pattern)
      if not re then t["x-lua-pattern"] = t.pattern end
      t.pattern = re
    end
    if t.items then fix(t.items) end
    if t.properties then
      for _, p in pairs(t.properties) do fix(p) end
    end
    return t
  end
  return fix(js)
end
_M.schema = oas_schema

-- FastAPI's 422 body: {"detail": [ValidationError, ...]}
local COMPONENTS = {
  ValidationError = {
    title = "ValidationError", type = "object",
    properties = {
      loc = { title = "Location", type = "array",
              items = { anyOf = array{ { type = "string" }, { type = "integer" } } } },
      msg = { title = "Message", type = "string" },
      type = { title = "Error Type", type = "string" },
      input = { title = "Input" },
      ctx = { title = "Context", type = "object" },
    },
    required = array{ "loc", "msg", "type" },
  },
  HTTPValidationError = {
    title = "HTTPValidationError", type = "object",
    properties = {
      detail = { title = "Detail", type = "array",
                 items = { ["$ref"] = "#/components/schemas/ValidationError" } },
    },
  },
}

-- "/items/{id:int}/{rest:path}" -> "/items/{id}/{rest}", and { {name, type}, ... }
local function path_params(path)
  local list = {}
  local oas = gsub(path, "{([^}:]+):?([^}]*)}", function(name, t)
    list[#list + 1] = { name = name, type = t }
    return "{" .. name .. "}"
  end)
  return oas, list
end

local PATH_TYPES = { int = { type = "integer" }, path = { type = "string" } }

-- one parameter object per field of a group (query, header): name, in, required, schema
local function field_params(out, list, where)
  for _, f in ipairs(list) do
    local s = f.schema
    out[#out + 1] = {
      name = f.key, ["in"] = where, required = not s.optional and s.default == nil,
      description = s.description, schema = oas_schema(s),
    }
  end
end

local function operation_id(method, path, used)
  local id = lower(method) .. gsub(path, "[^%w]", "_")
  local base, n = id, 1
  while used[id] do n = n + 1; id = base .. "_" .. n end
  used[id] = true
  return id
end

local function operation(r, method, oas_path, params, used)
  local o, spec = r.opts, r.validate or {}
  local op = {
    operationId = operation_id(method, oas_path, used),
    summary = o.summary, description = o.description,
    deprecated = o.deprecated or nil,
  }
  if o.tags and #o.tags > 0 then op.tags = array{ unpack(o.tags) } end
  local ps = array()
  local typed = {}
  for _, f in ipairs(spec.params or {}) do typed[f.name] = f.schema end
  for _, p in ipairs(params) do
    local s = typed[p.name]
    ps[#ps + 1] = { name = p.name, ["in"] = "path", required = true,
                    description = s and s.description,
                    schema = s and oas_schema(s) or PATH_TYPES[p.type] or { type = "string" } }
  end
  if spec.query then field_params(ps, spec.query, "query") end
  if spec.headers then field_params(ps, spec.headers, "header") end
  if #ps > 0 then op.parameters = ps end
  local b = spec.body
  if b then
    local js = oas_schema(b)
    local content = {}
    if spec.form then
      content["application/x-www-form-urlencoded"] = { schema = js }
      content["multipart/form-data"] = { schema = js }
    else
      content["application/json"] = { schema = js }
    end
    op.requestBody = { required = not b.optional and b.default == nil, content = content }
  end
  op.responses = {
    ["200"] = { description = "Successful Response",
                content = { ["application/json"] = {
                  schema = o.response and oas_schema(o.response) or {} } } },
  }
  if r.validate then
    op.responses["422"] = { description = "Validation Error",
                            content = { ["application/json"] = { schema = {
                              ["$ref"] = "#/components/schemas/HTTPValidationError" } } } }
  end
  return op
end

-- document(app) -> the OpenAPI 3.1 document of app's routes, a table.
function _M.document(app)
  local paths, used, validates = {}, {}, false
  for _, r in ipairs(app.routes) do
    if not r.websocket then
      local oas_path, params = path_params(r.path)
      local item = paths[oas_path] or {}
      paths[oas_path] = item
      for _, m in ipairs(r.method_list) do
        item[lower(m)] = operation(r, m, oas_path, params, used)
      end
      validates = validates or r.validate ~= nil
    end
  end
  local doc = {
    openapi = "3.1.0",
    info = { title = app.title, version = app.version, description = app.description },
    paths = paths,
  }
  if validates then doc.components = { schemas = COMPONENTS } end
  return doc
end

local DOCS_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; "
                 .. "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                 .. "form-action 'none'; frame-ancestors 'none'"

-- routes(app) -> the extra routes runtime.routes adds, as C wants them (see there):
-- GET app.openapi_path and, if the document is served, GET app.docs_path with
-- its script and style at docs_path .. "/app.js" and "/app.css".
function _M.routes(app, get_mask)
  local out = {}
  if not app.openapi_path then return out end
  for _, p in ipairs{ app.openapi_path, app.docs_path } do
    for _, r in ipairs(app.routes) do
      if r.path == p and find("," .. r.methods .. ",", ",GET,", 1, true) then
        error("the app's route GET " .. p .. " is where moonlet serves its OpenAPI document "
              .. "or /docs: give moonlet.app{ openapi = ..., docs = ... } another path or "
              .. "false", 0)
      end
    end
  end
  local json = core.json_encode(_M.document(app))
  local function add(path, ctype, body, extra)
    local headers = { ["content-type"] = ctype }
    for k, v in pairs(extra or {}) do headers[k] = v end
    out[#out + 1] = { mask = get_mask, methods = "GET", path = path, pooled = false,
                      handler = function() return 200, body, headers end }
  end
  add(app.openapi_path, "application/json", json)
  if app.docs_path then
    local page = require "moonlet.docs_page"
    local d = app.docs_path
    add(d, "text/html; charset=utf-8", page.html(app, d), { ["content-security-policy"] =
      DOCS_CSP })
    add(d .. "/app.js", "text/javascript; charset=utf-8", page.js(app.openapi_path))
    add(d .. "/app.css", "text/css; charset=utf-8", page.css)
  end
  return out
end

return _M
