-- The LuaLS annotations of the public Lua API (lua/moonlet/**.lua and the ---@meta files in
-- lua/moonlet/meta/ for what C defines). lua-language-server is in neither Debian 12 nor
-- npm, so this spec reads the annotations the way it does, for what matters to completion
-- and hover:
--   * every definition file compiles, and starts with ---@meta;
--   * every public function -- walked at run time in the module tables and in the method
--     tables of the objects they make (for C objects whose metatable is locked, in the
--     luaL_Reg list the C file registers) -- is declared in its ---@class: a function with
--     a --- doc block, or a ---@field of a function type;
--   * every function so documented names each of its parameters with ---@param, and no
--     ---@param names a parameter the function does not have;
--   * nothing is declared that no longer exists (a renamed or removed function).
local t = require "moonlet.testing"
local moonlet = require "moonlet"

local function sh_lines(cmd)
  local r = t.run({ "-c", cmd }, { bin = "/bin/sh" })
  assert(r.status == 0, r.stderr)
  local out = {}
  for line in r.stdout:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local FILES = sh_lines("find lua/moonlet -name '*.lua' | LC_ALL=C sort")
local META = sh_lines("find lua/moonlet/meta -name '*.lua' | LC_ALL=C sort")

-- declared[class][name] = { fn = bool, where = "file:line" }; problems: what is wrong.
local declared, problems = {}, {}

local function declare(class, name, fn, where)
  declared[class] = declared[class] or {}
  local d = declared[class][name]
  if not d or fn then declared[class][name] = { fn = fn, where = where } end
end

local function params_of(list)
  local ps = {}
  for p in list:gmatch("[%w_%.]+") do
    if p ~= "self" then ps[#ps + 1] = p end
  end
  return ps
end

-- Reads one file: ---@class blocks bind the variable assigned on the next code line
-- (local X = ... / X = ...) to the class, ---@field lines declare members, and a doc
-- block (lines starting with ---) above `function X.f(...)`, `function X:f(...)` or
-- `X.f = ...` declares X's class's f.
local function scan(path)
  local var_class = {}
  local doc = {}
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    local where = path .. ":" .. n
    local d = line:match("^%s*%-%-%-(.*)$")
    if d then
      doc[#doc + 1] = d
    else
      local block_class
      local fields = {}
      local params, returns = {}, false
      for _, l in ipairs(doc) do
        local c = l:match("^@class%s+([%w_%.]+)")
        if c then block_class = c end
        local fname, ftype = l:match("^@field%s+([%w_]+)%??%s+(.*)$")
        if fname and block_class then
          fields[#fields + 1] = { fname, ftype:find("^fun%(") ~= nil }
        end
        local p = l:match("^@param%s+([%w_%.]+)")
        if p then params[#params + 1] = p end
        if l:find("^@return") then returns = true end
      end
      for _, f in ipairs(fields) do declare(block_class, f[1], f[2], where) end
      local var = line:match("^local%s+([%w_]+)%s*=") or line:match("^([%w_]+)%s*=")
      if block_class and var then var_class[var] = block_class end
      local v, sep, f, plist = line:match("^%s*function%s+([%w_]+)([%.:])([%w_]+)%s*%(([^)]*)%)")
      local is_fn = true
      if not v then
        v, f = line:match("^([%w_]+)%.([%w_]+)%s*=")
        is_fn = not line:find("=%s*{")   -- X.t = { ... }: a table, not a function
      end
      if v and var_class[v] and #doc > 0 then
        declare(var_class[v], f, is_fn, where)
        if plist then
          local want = params_of(plist)
          local have = {}
          for _, p in ipairs(params) do have[p] = true end
          for _, p in ipairs(want) do
            if not have[p] then
              problems[#problems + 1] = where .. ": ---@param " .. p .. " missing"
            end
          end
          local known = {}
          for _, p in ipairs(want) do known[p] = true end
          if sep == ":" then known.self = true end
          for _, p in ipairs(params) do
            if not known[p] then
              problems[#problems + 1] = where .. ": ---@param " .. p .. " names no parameter"
            end
          end
        end
      end
      doc = {}
      local _ = returns
    end
  end
end

for _, f in ipairs(FILES) do scan(f) end

local function fns(tbl)
  local out = {}
  for k, v in pairs(tbl) do
    if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then
      out[#out + 1] = k
    end
  end
  table.sort(out)
  return out
end

-- The luaL_Reg list named `list` in a C file: the method names it registers.
local function c_methods(path, list)
  local text = t.read_file(path)
  local body = text:match("luaL_Reg%s+" .. list .. "%[%]%s*=%s*(%b{})")
  assert(body, path .. " registers no " .. list)
  local out = {}
  for name in body:gmatch('{%s*"([%w_]+)"') do out[#out + 1] = name end
  table.sort(out)
  return out
end

-- class -> the names of the functions it has at run time
local function runtime_classes()
  local app = moonlet.app{}
  app:get("/x", function() return { ok = true } end)
  local db = assert(moonlet.db.open("sqlite::memory:"))
  local tx = assert(db:begin())
  local client = t.client(app)
  local res = client:get("/x")
  local proc = t.spawn({ "version" })
  proc:wait(10)
  proc:finish()
  local cls = {
    moonlet = fns(moonlet),
    ["moonlet.json"] = fns(moonlet.json),
    ["moonlet.log"] = fns(moonlet.log),
    ["moonlet.shared"] = fns(moonlet.shared),
    ["moonlet.middleware"] = fns(moonlet.middleware),
    ["moonlet.schema"] = fns(moonlet.schema),
    ["moonlet.db"] = fns(moonlet.db),
    ["moonlet.DB"] = fns(getmetatable(db).__index),
    ["moonlet.Tx"] = fns(getmetatable(tx).__index),
    ["moonlet.http"] = fns(moonlet.http),
    ["moonlet.http.Response"] = fns(moonlet.http.Response),
    ["moonlet.redis"] = fns(moonlet.redis),
    ["moonlet.redis.Client"] = fns(moonlet.redis.Client),
    ["moonlet.redis.Pipeline"] = fns(moonlet.redis.Pipeline),
    ["moonlet.redis.Subscription"] = fns(moonlet.redis.Subscription),
    ["moonlet.App"] = fns(getmetatable(app).__index),
    ["moonlet.Router"] = fns(getmetatable(moonlet.router{}).__index),
    ["moonlet.Request"] = fns(require("moonlet.request").methods),
    ["moonlet.WebSocket"] = fns(require("moonlet.websocket").mt.__index),
    ["moonlet.Cond"] = c_methods("core/sched/cond.c", "methods"),
    ["moonlet.SharedDict"] = c_methods("core/sched/shared.c", "methods"),
    ["moonlet.testing"] = fns(t),
    ["moonlet.testing.Client"] = fns(getmetatable(client).__index),
    ["moonlet.testing.Response"] = fns(getmetatable(res).__index),
    ["moonlet.testing.Process"] = fns(getmetatable(proc).__index),
  }
  tx:rollback()
  db:close()
  client:close()
  return cls
end

-- a class's declared functions, its parents' included (---@class A: B)
local parents = {}
for _, f in ipairs(FILES) do
  for line in io.lines(f) do
    local c, list = line:match("^%-%-%-@class%s+([%w_%.]+)%s*:%s*([%w_%., ]+)")
    if c then
      parents[c] = {}
      for p in list:gmatch("[%w_%.]+") do parents[c][#parents[c] + 1] = p end
    end
  end
end
local function lookup(class, name)
  local d = declared[class] and declared[class][name]
  if d then return d end
  for _, p in ipairs(parents[class] or {}) do
    d = lookup(p, name)
    if d then return d end
  end
end

describe("LuaLS annotations", function()
  it("every definition file compiles and is a ---@meta file", function()
    assert.is_true(#META >= 1)
    for _, f in ipairs(META) do
      assert(loadfile(f))
      assert.matches("^%-%-%-@meta", t.read_file(f), 1, f)
    end
  end)

  it("every public function is declared in its class, with its parameters", function()
    local missing = {}
    for class, names in pairs(runtime_classes()) do
      for _, name in ipairs(names) do
        local d = lookup(class, name)
        if not (d and d.fn) then missing[#missing + 1] = class .. "." .. name end
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
    assert.are.same({}, problems)
  end)

  it("declares no function that does not exist", function()
    local stale = {}
    for class, names in pairs(runtime_classes()) do
      local have = {}
      for _, n in ipairs(names) do have[n] = true end
      for name, d in pairs(declared[class] or {}) do
        if d.fn and not have[name] then stale[#stale + 1] = class .. "." .. name .. " (" .. d.where .. ")" end
      end
    end
    table.sort(stale)
    assert.are.same({}, stale)
  end)
end)
