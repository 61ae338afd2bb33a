-- moonlet.test: `moonlet test [busted options] [PATH ...]` runs busted (Debian's
-- lua-busted) inside moonlet's runtime, so specs can require "moonlet" and its
-- primitives block on the runner's own loop.
--
--   main(args, cdir)   sets the module paths, runs busted's command line on args
--                      (default tests/spec, or . where there is none) and returns the exit status.
--   output(options)    the default output handler: one line per test, then exactly
--                      "N passed, N failed" (", N skipped" when tests are pending).
--                      busted's own handlers stay available: -o TAP, -o junit.
--
-- The helpers specs drive the binary with (moonlet.testing: client, processes, the
-- in-process test client) are compiled in; lua/ next to the binary (the source tree) and
-- share/lua/5.1 stay on the path for other modules.
local ffi = require "ffi"

local fmt, find, gsub, match, sub = string.format, string.find, string.gsub, string.match, string.sub
local concat = table.concat
local floor = math.floor

local _M = {}

local LUA_SHARE = "/usr/share/lua/5.1"
local OUTPUT = "moonlet.test.output"

ffi.cdef [[
  long moonlet_test_readlink(const char *path, char *buf, size_t n) __asm__("readlink");
]]

-- The directory of the running binary, or nil.
local function exe_dir()
  local buf = ffi.new("char[4096]")
  local n = tonumber(ffi.C.moonlet_test_readlink("/proc/self/exe", buf, 4096))
  if n <= 0 then return nil end
  return match(ffi.string(buf, n), "^(.*)/[^/]*$")
end

-- Adds the templates of list (";"-separated) that search does not hold yet, before
-- or after it.
local function with(search, list, first)
  local add = {}
  for entry in list:gmatch("[^;]+") do
    if not find(";" .. search .. ";", ";" .. entry .. ";", 1, true) then add[#add + 1] = entry end
  end
  if #add == 0 then return search end
  if first then return concat(add, ";") .. ";" .. search end
  return search .. ";" .. concat(add, ";")
end

local function lua_dir(dir)
  return dir .. "/?.lua;" .. dir .. "/?/init.lua"
end

-- package.path: moonlet.testing next to the binary first, Debian's Lua 5.1 modules
-- (busted, luassert, penlight) last; package.cpath: Debian's C modules for 5.1
-- (cdir, e.g. /usr/lib/x86_64-linux-gnu/lua/5.1; lfs, term and system.core).
local function set_paths(cdir)
  local exe = exe_dir()
  if exe then
    package.path = with(package.path, lua_dir(exe .. "/../lua") .. ";"
                                      .. lua_dir(exe .. "/../share/lua/5.1"), true)
  end
  package.path = with(package.path, lua_dir(LUA_SHARE))
  if cdir and cdir ~= "" then package.cpath = with(package.cpath, cdir .. "/?.so") end
end

---------------------------------------------------------------------------
-- output handler
---------------------------------------------------------------------------

local function say(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

local function indent(text)
  return "    " .. gsub(gsub(text, "\n+$", ""), "\n", "\n    ")
end

-- What a failure says: the message, then where (the traceback for an error that is
-- not a failed assertion).
local function failure_text(f)
  local msg = f.message
  if msg == nil then
    msg = "(no message)"
  elseif type(msg) ~= "string" then
    msg = require("pl.pretty").write(msg)
  end
  local trace = f.trace or {}
  if f.isError and trace.traceback then return msg .. "\n" .. gsub(trace.traceback, "^\n", "") end
  return msg
end

function _M.output(_options)   -- busted passes its options; we need none
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local passed, failed, skipped = 0, 0, 0

  local function ms(element)
    return floor((element.duration or 0) * 1000 + 0.5)
  end

  local function not_ok(f, duration)
    failed = failed + 1
    local name = f.name ~= "" and f.name or f.element.descriptor or "(spec files)"
    say(fmt("not ok - %s%s", name, duration or ""))
    say(indent(failure_text(f)))
  end

  handler.fileStart = function(file)
    say("# " .. file.name)
    return nil, true
  end

  handler.testEnd = function(element, _, status)
    if status == "success" then
      passed = passed + 1
      say(fmt("ok - %s (%d ms)", handler.getFullName(element), ms(element)))
    elseif status == "pending" then
      skipped = skipped + 1
      local p = handler.pendings[#handler.pendings]
      say(fmt("ok - %s # SKIP%s", p.name, p.message and " " .. tostring(p.message) or ""))
    elseif status == "failure" then
      not_ok(handler.failures[#handler.failures], fmt(" (%d ms)", ms(element)))
    else
      not_ok(handler.errors[#handler.errors], fmt(" (%d ms)", ms(element)))
    end
    return nil, true
  end

  -- Errors outside a test: a file that does not load, a failed setup or teardown.
  handler.error = function(element)
    if element.descriptor ~= "it" then not_ok(handler.errors[#handler.errors]) end
    return nil, true
  end

  handler.suiteEnd = function()
    local line = fmt("%d passed, %d failed", passed, failed)
    if skipped > 0 then line = line .. fmt(", %d skipped", skipped) end
    say(line)
    return nil, true
  end

  busted.subscribe({ "file", "start" }, handler.fileStart)
  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "error" }, handler.error)
  busted.subscribe({ "failure" }, handler.error)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end

---------------------------------------------------------------------------
-- command line
---------------------------------------------------------------------------

-- busted 2.1's options that take a value as the next argument ("-o TAP").
local TAKES_VALUE = {}
for name in ([[-p --pattern --exclude-pattern -e -o --output -C --directory -f --config-file
               --coverage-config-file -t --tags --exclude-tags --filter --filter-out -m --lpath
               --cpath -r --run --repeat --seed --lang --loaders --helper --lua -Xoutput
               -Xhelper]]):gmatch("%S+") do
  TAKES_VALUE[name] = true
end

-- True if args name a spec file or directory (an argument that is no option's).
local function has_path(args)
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then return args[i + 1] ~= nil end
    if sub(a, 1, 1) ~= "-" then return true end
    if TAKES_VALUE[a] then i = i + 1 end
    i = i + 1
  end
  return false
end

-- busted's argv: MOONLET_TEST_FILTER as --filter, ours, then, if no PATH was given,
-- tests/spec where there is one (this repository's layout), else the current directory
-- (a project made by `moonlet new`: app_spec.lua beside app.lua).
local function busted_args(args)
  local argv = { [0] = "moonlet test" }
  local filter = os.getenv("MOONLET_TEST_FILTER")
  if filter and filter ~= "" then argv[1] = "--filter=" .. filter end
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  if not has_path(args) then
    local d = io.open("tests/spec/.", "r")   -- opens where the directory exists
    argv[#argv + 1] = d and "tests/spec" or "."
    if d then d:close() end
  end
  return argv
end

-- busted names itself after the file that calls its runner ("busted: error: ...",
-- "Usage: busted ..."): this chunk is called "moonlet test". No tail call, so the
-- runner sees this frame as its caller.
local run_busted = load("local runner, options = ...\nlocal r = runner(options)\nreturn r",
                        "@moonlet test")

-- pcall(fn, ...) with os.exit raising nil instead of exiting: busted ends with
-- os.exit or error() on some paths, and the runner's loop and Lua state must still
-- close normally. Returns pcall's results, then the code given to os.exit.
local function without_exit(fn, ...)
  local real_exit, code = os.exit, nil
  os.exit = function(c) code = c; error(nil, 0) end   -- luacheck: ignore 122
  local ok, err = pcall(fn, ...)
  os.exit = real_exit                                 -- luacheck: ignore 122
  return ok, err, code
end

-- Runs busted on args; returns the exit status (0: nothing failed).
function _M.main(args, cdir)
  set_paths(cdir)
  local found, runner = pcall(require, "busted.runner")
  if not found then
    if find(runner, "module 'busted.runner' not found", 1, true) then
      io.stderr:write("moonlet: lua-busted is not installed (apt-get install lua-busted,"
                      .. " or scripts/deps.sh test)\n")
    else
      io.stderr:write("moonlet: cannot load busted: ", tostring(runner), "\n")
    end
    return 2
  end
  package.preload[OUTPUT] = function() return _M.output end
  io.stdout:setvbuf("line")
  local saved_arg = rawget(_G, "arg")
  rawset(_G, "arg", busted_args(args))
  local ok, err, code = without_exit(run_busted, runner, { standalone = false, output = OUTPUT })
  rawset(_G, "arg", saved_arg)
  if ok then return 0 end
  if err ~= nil then                 -- not busted's exit: a bug
    io.stderr:write("moonlet: ", tostring(err), "\n")
    return 2
  end
  if code == true or code == 0 then return 0 end
  return 1
end

return _M
