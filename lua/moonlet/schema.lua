-- moonlet.schema: schemas for route options (query, params, headers, body) and their
-- validation, with pydantic v2's error types and messages.
--   local s = moonlet.schema
--   s.object({ title = s.string{ min_length = 1 }, tags = s.array(s.string{}) },
--            { additional = false })
-- Each constructor checks its options and builds the schema's check closure once; a schema
-- keeps its options as given (for OpenAPI: json_schema). Checking a value runs against one
-- error list and one location stack per Lua state (validation never yields), so a valid
-- scalar costs no allocation: a location table is built only when an error is recorded.
local core = require "moonlet.core"
local cjson = require "cjson"

local type, pairs, ipairs, error, tostring, tonumber, setmetatable, getmetatable, pcall =
  type, pairs, ipairs, error, tostring, tonumber, setmetatable, getmetatable, pcall
local next = next
local find, lower, format = string.find, string.lower, string.format
local concat, sort = table.concat, table.sort
local huge = math.huge

local null, array_mt = cjson.null, core.array_mt

---A schema (moonlet.schema.string{...}, object{...}, ...): its options as given.
---@class moonlet.Schema

---Options every schema takes.
---@class moonlet.SchemaOptions
---@field optional? boolean
---@field default? any
---@field description? string
---@field example? any

---moonlet.schema: the constructors for route options (query, params, headers, body, form,
---response), and the validation helpers validate.lua uses.
---@class moonlet.schema
---@field push fun(key: string|integer) enter a location (validation)
---@field pop fun() leave it
---@field fail fun(etype: string, msg: string, input: any, ctx?: table) records an error at the location
---@field check_fields fun(list: table, src: table, dst: table, how: table, missing_input?: any) checks compiled fields of src into dst
---@field copy fun(v: any): any a deep copy of a default value
local _M = {}
local schema_mt = {}
_M.mt = schema_mt

---@param x any
---@return boolean
function _M.is_schema(x)
  return getmetatable(x) == schema_mt
end

-- --------------------------------------------------------------------- errors and loc

local stack, depth = {}, 0      -- stack[1..depth]: where the value being checked is
local errs, nerr = {}, 0        -- the errors recorded since reset()

---Starts a validation: no errors, location empty.
function _M.reset()
  depth, nerr = 0, 0
end

-- push(key) / pop(): enter and leave a location ("query", a field name, a 0-based index).
local function push(key)
  depth = depth + 1
  stack[depth] = key
end
local function pop() depth = depth - 1 end
_M.push, _M.pop = push, pop

-- Records one error at the current location; input nil is JSON null.
local function fail(etype, msg, input, ctx)
  local loc = {}
  for i = 1, depth do loc[i] = stack[i] end
  if input == nil then input = null end
  nerr = nerr + 1
  errs[nerr] = { type = etype, loc = loc, msg = msg, input = input, ctx = ctx }
end
_M.fail = fail

---The errors recorded since reset(), as a new list, or nil when there are none.
---@return {type: string, loc: any[], msg: string, input: any, ctx?: table}[]|nil
function _M.errors()
  if nerr == 0 then return nil end
  local out = {}
  for i = 1, nerr do out[i] = errs[i]; errs[i] = nil end
  nerr = 0
  return out
end

-- ------------------------------------------------------------------------ options

local COMMON = { optional = true, default = true, description = true, example = true }

local getinfo = debug.getinfo
local THIS = getinfo(1, "S").source

-- Raises "bad argument #n to 'name' (why)" at the app's line: the first caller outside
-- this file.
local function argerr(name, n, why)
  local level = 2
  while getinfo(level, "S") and getinfo(level, "S").source == THIS do level = level + 1 end
  error(format("bad argument #%d to '%s' (%s)", n, name, why), level)
end

-- Checks an options table: a table (or nil) whose keys are COMMON or `own`; returns it.
local function check_opts(name, n, opts, own, accepted)
  if opts == nil then return {} end
  if type(opts) ~= "table" or getmetatable(opts) == schema_mt then
    argerr(name, n, "expected a table of options")
  end
  for k in pairs(opts) do
    if not COMMON[k] and not own[k] then
      argerr(name, n, "unknown option '" .. tostring(k) .. "'; accepted: " .. accepted
             .. "optional, default, description, example")
    end
  end
  if opts.optional ~= nil and type(opts.optional) ~= "boolean" then
    argerr(name, n, "optional must be a boolean")
  end
  if opts.description ~= nil and type(opts.description) ~= "string" then
    argerr(name, n, "description must be a string")
  end
  return opts
end

local function check_count(name, opts, key)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or v < 0 or v % 1 ~= 0) then
    argerr(name, 1, key .. " must be an integer >= 0")
  end
end

local function check_bound(name, opts, key)
  local v = opts[key]
  if v ~= nil and (type(v) ~= "number" or v ~= v) then
    argerr(name, 1, key .. " must be a number")
  end
end

local function plural(n, word)
  return n == 1 and word or word .. "s"
end

-- Python's repr of an enum value in pydantic's messages: 'a' for strings.
local function repr(v)
  if type(v) == "string" then return "'" .. v .. "'" end
  return tostring(v)
end

-- enum = { "a", "b", "c" } -> the set, and pydantic's "'a', 'b' or 'c'"
local function compile_enum(name, enum, vtype)
  if enum == nil then return nil end
  if type(enum) ~= "table" or #enum == 0 then
    argerr(name, 1, "enum must be a non-empty list of values")
  end
  local set, parts = {}, {}
  for i, v in ipairs(enum) do
    if type(v) ~= vtype then argerr(name, 1, "enum values must be " .. vtype .. "s") end
    set[v] = true
    parts[i] = repr(v)
  end
  local expected = #parts == 1 and parts[1]
                   or concat(parts, ", ", 1, #parts - 1) .. " or " .. parts[#parts]
  return set, expected
end

-- A copy of a default value, so a handler changing it does not change the next request's.
local function copy(v)
  if type(v) ~= "table" then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = copy(x) end
  return setmetatable(t, getmetatable(v))
end

local function new_schema(name, opts, fields)
  local s = { type = name }
  for k, v in pairs(opts) do s[k] = v end
  if fields then for k, v in pairs(fields) do s[k] = v end end
  return setmetatable(s, schema_mt)
end

-- Checks the default against the schema itself (a wrong default is a load error) and keeps
-- it converted in s.default_value (s.default stays as given).
local function check_default(name, n, s)
  if s.default == nil then return end
  local saved_depth, saved_nerr = depth, nerr
  depth, nerr = 0, 0
  local v = s.check(s.default)
  local bad = nerr > 0 and errs[1].msg
  depth, nerr = saved_depth, saved_nerr
  if bad then argerr(name, n, "default does not validate: " .. bad) end
  s.default_value = v   -- converted: an array default is a moonlet.array
end

-- --------------------------------------------------------------------- constructors

-- s.string{ min_length, max_length, pattern (a Lua pattern), enum }
local STRING_OPTS = { min_length = true, max_length = true, pattern = true, enum = true }

-- Length in UTF-8 characters (code points), as pydantic counts: bytes that do not continue
-- a character. No allocation.
local function utf8_len(v)
  local n, i = #v, 1
  while true do
    i = find(v, "[\128-\191]", i)
    if not i then return n end
    n, i = n - 1, i + 1
  end
end

---s.string{ min_length, max_length, pattern (a Lua pattern), enum }
---@param opts? moonlet.SchemaOptions|{min_length?: integer, max_length?: integer, pattern?: string, enum?: string[]}
---@return moonlet.Schema
function _M.string(opts)
  opts = check_opts("string", 1, opts,
                    STRING_OPTS, "min_length, max_length, pattern, enum, ")
  check_count("string", opts, "min_length")
  check_count("string", opts, "max_length")
  local min_len, max_len, pattern = opts.min_length, opts.max_length, opts.pattern
  if pattern ~= nil and (type(pattern) ~= "string" or not pcall(find, "", pattern)) then
    argerr("string", 1, "pattern must be a valid Lua pattern")
  end
  local enum, expected = compile_enum("string", opts.enum, "string")
  local short_msg = min_len and format("String should have at least %d %s", min_len,
                                       plural(min_len, "character"))
  local long_msg = max_len and format("String should have at most %d %s", max_len,
                                      plural(max_len, "character"))
  local pattern_msg = pattern and "String should match pattern '" .. pattern .. "'"
  local enum_msg = enum and "Input should be " .. expected
  local s = new_schema("string", opts)
  function s.check(v)
    if type(v) ~= "string" then
      return fail("string_type", "Input should be a valid string", v)
    end
    if enum and not enum[v] then
      return fail("literal_error", enum_msg, v, { expected = expected })
    end
    -- bytes >= characters: count characters only when the byte length is not enough
    if min_len and #v < min_len * 4 and utf8_len(v) < min_len then
      return fail("string_too_short", short_msg, v, { min_length = min_len })
    end
    if max_len and #v > max_len and utf8_len(v) > max_len then
      return fail("string_too_long", long_msg, v, { max_length = max_len })
    end
    if pattern and not find(v, pattern) then
      return fail("string_pattern_mismatch", pattern_msg, v, { pattern = pattern })
    end
    return v
  end
  check_default("string", 1, s)
  return s
end

local NUMBER_OPTS = { min = true, max = true, enum = true }

-- A decimal number in a string ("1.5", "-2", "1e3"), not hex, inf or nan -> the number.
local function parse_number(v)
  local n = tonumber(v)
  if n and not find(v, "[xXnNiI]") then return n end
  return nil
end

-- s.integer{...} and s.number{...}: what differs is the conversion.
local function numeric(name, opts, convert)
  opts = check_opts(name, 1, opts, NUMBER_OPTS, "min, max, enum, ")
  check_bound(name, opts, "min")
  check_bound(name, opts, "max")
  local min, max = opts.min, opts.max
  local enum, expected = compile_enum(name, opts.enum, "number")
  local ge_msg = min and "Input should be greater than or equal to " .. tostring(min)
  local le_msg = max and "Input should be less than or equal to " .. tostring(max)
  local enum_msg = enum and "Input should be " .. expected
  local s = new_schema(name, opts)
  function s.check(v)
    local n = convert(v)
    if n == nil then return nil end
    if enum and not enum[n] then
      return fail("literal_error", enum_msg, v, { expected = expected })
    end
    if min and n < min then return fail("greater_than_equal", ge_msg, v, { ge = min }) end
    if max and n > max then return fail("less_than_equal", le_msg, v, { le = max }) end
    return n
  end
  check_default(name, 1, s)
  return s
end

local INT_MSG = "Input should be a valid integer"

local function to_integer(v)
  local tv = type(v)
  if tv == "number" then
    if v ~= v or v == huge or v == -huge then
      return fail("finite_number", "Input should be a finite number", v)
    end
    if v % 1 ~= 0 then
      return fail("int_from_float", INT_MSG .. ", got a number with a fractional part", v)
    end
    return v
  elseif tv == "string" then
    -- the common case, plain digits, without a pattern: what tostring gives back
    local n = tonumber(v)
    if n and n % 1 == 0 and n > -1e15 and n < 1e15 and tostring(n) == v then return n end
    if find(v, "^%s*[-+]?%d+%s*$") then return tonumber(v) end
    return fail("int_parsing", INT_MSG .. ", unable to parse string as an integer", v)
  elseif tv == "boolean" then
    return v and 1 or 0
  end
  return fail("int_type", INT_MSG, v)
end

local function to_number(v)
  local tv = type(v)
  if tv == "number" then return v end
  if tv == "string" then
    local n = parse_number(v)
    if n then return n end
    return fail("float_parsing",
                "Input should be a valid number, unable to parse string as a number", v)
  elseif tv == "boolean" then
    return v and 1 or 0
  end
  return fail("float_type", "Input should be a valid number", v)
end

---s.integer{ min, max, enum }: whole numbers; "10" -> 10.
---@param opts? moonlet.SchemaOptions|{min?: number, max?: number, enum?: integer[]}
---@return moonlet.Schema
function _M.integer(opts) return numeric("integer", opts, to_integer) end

---s.number{ min, max, enum }: any number; "1.5" -> 1.5.
---@param opts? moonlet.SchemaOptions|{min?: number, max?: number, enum?: number[]}
---@return moonlet.Schema
function _M.number(opts) return numeric("number", opts, to_number) end

-- pydantic's strings for booleans (any case)
local BOOL_STR = {}
for _, w in ipairs{ "true", "1", "on", "t", "y", "yes" } do BOOL_STR[w] = true end
for _, w in ipairs{ "false", "0", "off", "f", "n", "no" } do BOOL_STR[w] = false end

---s.boolean{}: true/false; "true"/"false", "1"/"0", "yes"/"no", "on"/"off" and 1/0 too.
---@param opts? moonlet.SchemaOptions
---@return moonlet.Schema
function _M.boolean(opts)
  opts = check_opts("boolean", 1, opts, {}, "")
  local s = new_schema("boolean", opts)
  function s.check(v)
    local tv = type(v)
    if tv == "boolean" then return v end
    if tv == "string" then
      local b = BOOL_STR[v]
      if b == nil then b = BOOL_STR[lower(v)] end
      if b ~= nil then return b end
    elseif tv == "number" then
      if v == 1 then return true end
      if v == 0 then return false end
    else
      return fail("bool_type", "Input should be a valid boolean", v)
    end
    return fail("bool_parsing", "Input should be a valid boolean, unable to interpret input", v)
  end
  check_default("boolean", 1, s)
  return s
end

-- A table whose keys are exactly 1..n (an empty table is both a list and an object: JSON
-- decoding cannot tell them apart).
local function is_list(t)
  local n = #t
  if n == 0 then return next(t) == nil end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

local ARRAY_OPTS = { min_items = true, max_items = true }

---s.array(item, { min_items, max_items }): a list, each item checked by `item` (loc: its
---0-based index, as in pydantic). The result is a moonlet.array (an empty one encodes []).
---@param item moonlet.Schema
---@param opts? moonlet.SchemaOptions|{min_items?: integer, max_items?: integer}
---@return moonlet.Schema
function _M.array(item, opts)
  if getmetatable(item) ~= schema_mt then
    argerr("array", 1, "expected the items' schema, e.g. s.array(s.string{})")
  end
  opts = check_opts("array", 2, opts, ARRAY_OPTS, "min_items, max_items, ")
  local min_n, max_n = opts.min_items, opts.max_items
  for _, key in ipairs{ "min_items", "max_items" } do
    local v = opts[key]
    if v ~= nil and (type(v) ~= "number" or v < 0 or v % 1 ~= 0) then
      argerr("array", 2, key .. " must be an integer >= 0")
    end
  end
  local s = new_schema("array", opts, { items = item })
  local check_item = item.check
  function s.check(v)
    if type(v) ~= "table" or not is_list(v) or getmetatable(v) == schema_mt then
      return fail("list_type", "Input should be a valid list", v)
    end
    local n = #v
    if max_n and n > max_n then
      return fail("too_long", format("List should have at most %d %s after validation, not %d",
                                     max_n, plural(max_n, "item"), n), v,
                  { field_type = "List", max_length = max_n, actual_length = n })
    end
    local before = nerr
    local out = setmetatable({}, array_mt)
    for i = 1, n do
      push(i - 1)
      out[i] = check_item(v[i])
      pop()
    end
    if nerr > before then return nil end
    if min_n and n < min_n then
      return fail("too_short", format("List should have at least %d %s after validation, not %d",
                                       min_n, plural(min_n, "item"), n), v,
                  { field_type = "List", min_length = min_n, actual_length = n })
    end
    return out
  end
  check_default("array", 2, s)
  return s
end

-- --------------------------------------------------------------------- field groups

---Compiles { name = schema, ... } into a list of { name, key, schema } sorted by name (the
---order errors come in). `what` names the table in errors; `key_of` maps a field name to
---the key it is read from (headers: x_token -> x-token). Returns the list, or nil and why.
---@param t table<string, moonlet.Schema>
---@param what string
---@param key_of? fun(name: string): string
---@return table|nil list
---@return string? why
function _M.fields(t, what, key_of)
  if type(t) ~= "table" or getmetatable(t) == schema_mt then
    return nil, what .. " must be a table of schemas: { name = moonlet.schema.string{} }"
  end
  local list = {}
  for name, s in pairs(t) do
    if type(name) ~= "string" then
      return nil, what .. ": field names are strings, got " .. tostring(name)
    end
    if getmetatable(s) ~= schema_mt then
      return nil, what .. ": field '" .. name .. "' is not a schema (moonlet.schema.string{}...)"
    end
    list[#list + 1] = { name = name, key = key_of and key_of(name) or name, schema = s }
  end
  sort(list, function(a, b) return a.name < b.name end)
  return list
end

-- A value from a query string, a form or a header for an array field: a list.
local function as_list(v, split)
  if type(v) ~= "string" then return v end
  if not split then return { v } end
  local list, i = {}, 1
  while true do
    local s, e = find(v, "%s*,%s*", i)
    list[#list + 1] = v:sub(i, s and s - 1 or -1)
    if not s then return list end
    i = e + 1
  end
end

-- Checks the fields of `src` into `dst` (the same table for query, params and headers:
-- converted in place). how.strings: values are strings (query, form, headers; an array
-- field takes one value as a list of one; how.split: a header's "a, b" is two); how.empty:
-- "" counts as missing (forms, as in FastAPI); how.missing_input: the input of a missing
-- error (nil: null; a JSON object: the object, as pydantic).
local function check_fields(list, src, dst, how, missing_input)
  for i = 1, #list do
    local f = list[i]
    local s, v = f.schema, src[f.key]
    depth = depth + 1   -- push(f.key), pop() below: inline, once per field
    stack[depth] = f.key
    if v == "" and how.empty then
      v = nil
    elseif v == null and (s.default ~= nil or s.optional) then
      v = nil
    end
    if v == nil then
      if s.default ~= nil then v = copy(s.default_value)
      elseif not s.optional then fail("missing", "Field required", missing_input) end
    else
      if how.strings and s.type == "array" then v = as_list(v, how.split) end
      v = s.check(v)
    end
    depth = depth - 1
    dst[f.key] = v
  end
end
_M.check_fields = check_fields

local JSON_HOW = {}

local function by_name(a, b) return tostring(a) < tostring(b) end

local OBJECT_OPTS = { additional = true }

---s.object({ name = schema, ... }, { additional = false }): a JSON object; the result has
---the declared fields only (defaults filled). Unknown fields are ignored, or refused with
---additional = false (extra_forbidden).
---@param fields table<string, moonlet.Schema>
---@param opts? moonlet.SchemaOptions|{additional?: boolean}
---@return moonlet.Schema
function _M.object(fields, opts)
  local list, why = _M.fields(fields, "fields")
  if not list then argerr("object", 1, why) end
  opts = check_opts("object", 2, opts, OBJECT_OPTS, "additional, ")
  if opts.additional ~= nil and type(opts.additional) ~= "boolean" then
    argerr("object", 2, "additional must be a boolean")
  end
  local strict = opts.additional == false
  local declared = {}
  for _, f in ipairs(list) do declared[f.key] = true end
  local s = new_schema("object", opts, { fields = fields, field_list = list })
  function s.check(v, how)
    if type(v) ~= "table" or getmetatable(v) == array_mt or (#v > 0 and is_list(v)) then
      return fail("model_attributes_type",
                  "Input should be a valid dictionary or object to extract fields from", v)
    end
    local out = {}
    how = how or JSON_HOW
    local missing_input = v   -- pydantic: the object; FastAPI's forms: null
    if how.strings then missing_input = nil end
    check_fields(list, v, out, how, missing_input)
    if strict and next(v) ~= nil then
      local extra
      for k in pairs(v) do
        if not declared[k] then extra = extra or {}; extra[#extra + 1] = k end
      end
      if extra then   -- reported in name order, as the declared fields are
        sort(extra, by_name)
        for _, k in ipairs(extra) do
          push(k)
          fail("extra_forbidden", "Extra inputs are not permitted", v[k])
          pop()
        end
      end
    end
    return out
  end
  check_default("object", 2, s)
  return s
end

-- ---------------------------------------------------------------------- JSON Schema

local JSON_NAMES = {
  min = "minimum", max = "maximum", min_length = "minLength", max_length = "maxLength",
  pattern = "pattern", enum = "enum", min_items = "minItems", max_items = "maxItems",
  default = "default", description = "description", example = "example",
}

---schema.json_schema(s) -> the JSON Schema of s as a table (for OpenAPI).
---@param s moonlet.Schema
---@return table
function _M.json_schema(s)
  if getmetatable(s) ~= schema_mt then
    error("bad argument #1 to 'json_schema' (expected a moonlet.schema)", 2)
  end
  local out = { type = s.type }
  for k, name in pairs(JSON_NAMES) do
    if s[k] ~= nil then out[name] = copy(s[k]) end
  end
  if s.type == "array" then
    out.items = _M.json_schema(s.items)
  elseif s.type == "object" then
    local props, required = {}, setmetatable({}, array_mt)
    for _, f in ipairs(s.field_list) do
      props[f.name] = _M.json_schema(f.schema)
      if not f.schema.optional and f.schema.default == nil then
        required[#required + 1] = f.name
      end
    end
    out.properties = props
    if #required > 0 then out.required = required end
    if s.additional == false then out.additionalProperties = false end
  end
  return out
end

_M.copy = copy
return _M
