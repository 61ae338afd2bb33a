-- Installing moonlet both ways, into temporary trees: `luarocks --tree DIR make` (the
-- rockspec, in a copy of the sources: nothing lands in the checkout) and `make install
-- DESTDIR=...` (reusing the suite's build). From each installed copy: `moonlet version`,
-- apps/hello served and answering /hello (moonlet's client and curl), `moonlet test` with
-- the in-process client, and an app that finds the tree's modules on its package.path
-- while require "moonlet" gets the binary's embedded copy.
local t = require "moonlet.testing"

local q = t.shell_quote
local bin_dir = (os.getenv("MOONLET_BIN") or "build/moonlet"):match("^(.*)/[^/]*$") or "build"

local function sh(cmd, opts)
  opts = opts or {}
  local r = t.run({ "-c", cmd }, { bin = "/bin/sh", cwd = opts.cwd, timeout = opts.timeout or 30 })
  assert(r.status == 0, cmd .. " failed (" .. r.status .. "):\n" .. r.stdout .. r.stderr)
  return r.stdout
end

local function lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

-- The Lua side as the checkout has it: lua/moonlet/**.lua, relative to lua/.
local lua_files = lines(sh("cd lua && find moonlet -name '*.lua' | LC_ALL=C sort"))

local function files_under(dir)
  return lines(sh("cd " .. q(dir) .. " && find . -type f | sed 's|^\\./||' | LC_ALL=C sort"))
end

-- What every installed tree must hold and do; luadir is tree/share/lua/5.1.
local function check_tree(tree)
  local bin = tree .. "/bin/moonlet"
  local luadir = tree .. "/share/lua/5.1"

  -- the files: every module, spec helper and LuaLS definition file, as in the checkout
  assert.is_true(#lua_files > 15)
  local meta = 0
  for _, f in ipairs(lua_files) do
    assert.are.equal(t.read_file("lua/" .. f), t.read_file(luadir .. "/" .. f), f)
    if f:find("^moonlet/meta/") then meta = meta + 1 end
  end
  assert.is_true(meta > 0, "no LuaLS definition files installed")
  assert.are.same(lua_files, (function()
    local got = {}
    for _, f in ipairs(files_under(luadir)) do got[#got + 1] = f end
    return got
  end)())

  local v = t.run({ "version" }, { bin = bin })
  assert.are.same(0, v.status)
  assert.matches("^moonlet %d+%.%d+%.%d+\n$", v.stdout)

  local srv = t.server{ app = "apps/hello", bin = bin }
  local res = assert(t.request(srv.port, "GET", "/hello"))
  assert.are.same(200, res.status)
  assert.are.same({ message = "hello" }, res:json())
  local c = t.run({ "-s", "-i", "http://127.0.0.1:" .. srv.port .. "/hello" }, { bin = "curl" })
  assert.are.same(0, c.status)
  assert.matches("^HTTP/1.1 200 OK\r\n", c.stdout)
  assert.matches('\r\n\r\n{"message":"hello"}$', c.stdout)
  srv:stop()

  -- an app beside the tree: a module installed into the tree (as `luarocks --tree TREE
  -- install x` would put it) is found; moonlet itself is on the path too, but the embedded
  -- copy is the one loaded (its chunk name is the source tree's, not the installed file's)
  local dir = t.tmpdir()
  t.write_file(luadir .. "/install_probe.lua", 'return "from the tree"\n')
  t.write_file(dir .. "/app.lua", [[
local moonlet = require "moonlet"
local app = moonlet.app{ title = "where" }
app:get("/where", function()
  return { probe = require "install_probe",
           found = package.searchpath("moonlet", package.path),
           loaded = debug.getinfo(moonlet.app, "S").source }
end)
return app
]])
  t.write_file(dir .. "/where_spec.lua", [[
local t = require "moonlet.testing"
describe("where", function()
  it("answers in process", function()
    local client = t.client("]] .. dir .. [[")
    local res = client:get("/where")
    assert.are.same(200, res.status)
    assert.are.same("from the tree", res:json().probe)
    client:close()
  end)
end)
]])
  srv = t.server{ app = dir, bin = bin }
  res = assert(t.request(srv.port, "GET", "/where"))
  srv:stop()
  assert.are.same({ probe = "from the tree", found = luadir .. "/moonlet/init.lua",
                    loaded = "@lua/moonlet/app.lua" }, res:json())

  local spec = t.run({ "test", dir .. "/where_spec.lua" }, { bin = bin, timeout = 30 })
  os.remove(luadir .. "/install_probe.lua")
  assert.are.same(0, spec.status, spec.stdout .. spec.stderr)
  assert.matches("1 passed, 0 failed", spec.stdout)
end

describe("install", function()
  local before
  lazy_setup(function() before = sh("ls -A") end)
  lazy_teardown(function()   -- neither way leaves a file in the checkout
    assert.are.same(before, sh("ls -A"))
  end)

  it("luarocks --tree DIR make: bin/moonlet and the Lua side in share/lua/5.1", function()
    local src, tree = t.tmpdir(), t.tmpdir()
    sh("cp -R core lua tools Makefile moonlet-scm-1.rockspec README.md " .. q(src))
    -- a full build from the rockspec's variables (LuaJIT's headers as LUAJIT), no -j
    -- LUA_INCDIR as the README says: luarocks looks for lua.h there before the build runs
    local rocks = "luarocks --lua-version=5.1 --tree " .. q(tree)
    local out = sh(rocks .. " make LUA_INCDIR=/usr/include/luajit-2.1 2>&1",
                   { cwd = src, timeout = 300 })
    assert.matches("moonlet scm%-1 is now installed in " .. tree:gsub("%p", "%%%0"), out)
    assert.matches("%-I/[%w/_.-]*/luajit%-2%.1 ", out)
    check_tree(tree)
    local rock = "lib/luarocks/rocks-5.1/moonlet/scm-1/"
    local all = files_under(tree)
    for _, f in ipairs({ "bin/moonlet", rock .. "moonlet-scm-1.rockspec",
                         "share/lua/5.1/moonlet/init.lua" }) do
      assert.is_truthy(table.concat(all, "\n"):find(f, 1, true), f)
    end
    -- luarocks knows the rock: list, and a clean remove
    assert.matches("moonlet%s+scm%-1", sh(rocks .. " list --porcelain"))
    sh(rocks .. " remove moonlet")
    assert.are.same({}, (function()
      local left = {}
      for _, f in ipairs(files_under(tree)) do
        if not f:find("^lib/luarocks/") then left[#left + 1] = f end
      end
      return left
    end)())
  end)

  it("make install PREFIX=/usr/local DESTDIR=...: the same set, plus the embedding library",
     function()
    local dest = t.tmpdir()
    sh("make -s install BUILD=" .. q(bin_dir) .. " PREFIX=/usr/local DESTDIR=" .. q(dest),
       { timeout = 120 })
    local tree = dest .. "/usr/local"
    local want = { "bin/moonlet", "include/moonlet.h", "lib/libmoonlet.a",
                   "lib/libmoonlet.so.0.1.0", "lib/pkgconfig/moonlet.pc" }
    for _, f in ipairs(lua_files) do want[#want + 1] = "share/lua/5.1/" .. f end
    table.sort(want)
    assert.are.same(want, files_under(tree))
    check_tree(tree)
  end)
end)
