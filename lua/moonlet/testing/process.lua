-- moonlet.testing.process: runs the moonlet binary (or any program) in the background
-- and watches it from the outside.
--
--   server{...}    `moonlet serve APP --host 127.0.0.1 --port 0`, waits for "listening on"
--   start{...}     the same without raising when the start fails
--   run(argv)      a command to completion: { status, stdout, stderr }
--   process :stop (TERM, then KILL; raises on a sanitizer report), :wait_log(pattern),
--           :signal, :wait, :kill, :stdout, :stderr, :request, :connect
--   tmpdir(), write_file, read_file, shell_quote   files for the processes
--
-- The program runs through /bin/sh; its pid, stdout, stderr and exit status land in
-- files of a private temp dir, which we poll. Under `moonlet test` (busted), processes
-- a spec file leaves running are stopped, and its temp dirs removed, when the file ends.
local ffi = require "ffi"
local client = require "moonlet.testing.client"

local C = ffi.C
local type, tostring, tonumber, pairs, ipairs = type, tostring, tonumber, pairs, ipairs
local error, pcall, setmetatable = error, pcall, setmetatable
local concat, sort = table.concat, table.sort
local fmt, sub, find, match, gmatch, gsub = string.format, string.sub, string.find, string.match,
                                            string.gmatch, string.gsub
local max = math.max
local now, sleep, raise_nofile = client.now, client.sleep, client.raise_nofile

---@class moonlet.testing.process
local _M = { _VERSION = "0.2.0" }

do
  local ok, err = pcall(ffi.cdef, [[
    int moonlet_t_kill(int pid, int sig) __asm__("kill");
    int moonlet_t_getpid(void) __asm__("getpid");
  ]])
  if not ok and not find(tostring(err), "redefine", 1, true) then error(err) end
end

local SIGNALS = { HUP = 1, INT = 2, QUIT = 3, KILL = 9, USR1 = 10, USR2 = 12,
                  TERM = 15, CONT = 18, STOP = 19 }
local DEFAULT_TIMEOUT = 10

---------------------------------------------------------------------------
-- files
---------------------------------------------------------------------------

-- Whole file as a string, or nil, err.
local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("*a")
  f:close()
  return data
end
---read_file(path) -> its bytes, or nil.
_M.read_file = read_file

local function shell_quote(s)
  return "'" .. gsub(tostring(s), "'", "'\\''") .. "'"
end
---shell_quote(s) -> s quoted for /bin/sh.
_M.shell_quote = shell_quote

local function sh_ok(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true        -- Lua 5.1 style or LUAJIT_ENABLE_LUA52COMPAT
end

local function popen_read(cmd)
  local f = assert(io.popen(cmd, "r"))
  local out = f:read("*a")
  f:close()
  return out
end

---Writes text to path (creating missing parent directories); raises on failure.
---@param path string
---@param text string
function _M.write_file(path, text)
  local f = io.open(path, "wb")
  if not f then
    local dir = match(path, "^(.*)/[^/]*$")
    if dir and dir ~= "" then sh_ok("mkdir -p " .. shell_quote(dir)) end
    local err
    f, err = io.open(path, "wb")
    if not f then error("write_file: " .. tostring(err), 2) end
  end
  f:write(text)
  f:close()
  return path
end

local keep_files = os.getenv("MOONLET_TEST_KEEP") and os.getenv("MOONLET_TEST_KEEP") ~= ""
local tmpdirs = {}        -- made by tmpdir(); removed by cleanup()

local function make_tmpdir(kind)
  local base = os.getenv("TMPDIR")
  if not base or base == "" then base = "/tmp" end
  local dir = gsub(popen_read("mktemp -d " .. shell_quote(base .. "/moonlet-" .. kind .. ".XXXXXX")
                              .. " 2>&1"), "%s+$", "")
  if sub(dir, 1, 1) ~= "/" then error("mktemp -d failed: " .. dir, 3) end
  return dir
end

local function remove_tree(dir)
  if not keep_files and dir and match(dir, "^/.+/moonlet%-") then
    sh_ok("rm -rf " .. shell_quote(dir))
  end
end

---A fresh private directory, removed by cleanup() (kept if MOONLET_TEST_KEEP is set).
function _M.tmpdir()
  local dir = make_tmpdir("test")
  tmpdirs[#tmpdirs + 1] = dir
  return dir
end

---------------------------------------------------------------------------
-- processes
---------------------------------------------------------------------------

---A process the spec started (t.server, t.spawn, t.start).
---@class moonlet.testing.Process
---@field port integer the port a server listens on
---@field listening boolean
---@field status integer? the exit status once ended
local Proc = {}
Proc.__index = Proc

local procs = {}            -- running or unreaped process objects, in start order

local probes = {}
local function probe(name, cmd)
  if probes[name] == nil then probes[name] = sh_ok(cmd .. " >/dev/null 2>&1") end
  return probes[name]
end

local function untrack(p)
  for i = #procs, 1, -1 do
    if procs[i] == p then table.remove(procs, i) end
  end
end

local function tail(text, lines)
  local all = {}
  for line in gmatch(text or "", "[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return concat(all, "", max(1, #all - (lines or 30) + 1))
end

-- Starts `bin argv...` in the background. The command line run by /bin/sh:
--   ( setsid env --default-signal=INT,QUIT [VAR=v] BIN ARGS <in >D/stdout 2>D/stderr &
--     c=$!; echo $c >D/pid.tmp; mv ...; WATCHER &
--     wait $c; echo $? >D/status.tmp; mv ... ) &
-- setsid gives the child its own process group (so a KILL reaches workers it
-- forks) without forking again, so $! is the binary's pid; env restores SIGINT and
-- SIGQUIT, which sh ignores in background jobs. The watcher polls once a second
-- and kills the group if this test process is gone (runner killed, Ctrl-C), so
-- no server outlives the run even when cleanup() is never reached.
local function spawn(argv, opts)
  raise_nofile(65536)
  local dir = make_tmpdir("proc")
  local bin = opts.bin or os.getenv("MOONLET_BIN")
  if not bin or bin == "" then bin = "build/moonlet" end
  if opts.cwd and sub(bin, 1, 1) ~= "/" and find(bin, "/", 1, true) then
    bin = gsub(popen_read("pwd"), "%s+$", "") .. "/" .. bin
  end
  local words = {}
  local group = probe("setsid", "command -v setsid")
  if group then words[#words + 1] = "setsid" end
  words[#words + 1] = "env"
  if probe("default-signal", "env --default-signal=INT true") then
    words[#words + 1] = "--default-signal=INT,QUIT"
  end
  if opts.env then
    local names = {}
    for k in pairs(opts.env) do
      if type(k) ~= "string" or not match(k, "^[%a_][%w_]*$") then
        error("bad environment variable name " .. client.quote(k), 3)
      end
      names[#names + 1] = k
    end
    sort(names)
    for _, k in ipairs(names) do
      if opts.env[k] == false then words[#words + 1] = "-u " .. k end
    end
    for _, k in ipairs(names) do
      if opts.env[k] ~= false then words[#words + 1] = k .. "=" .. shell_quote(opts.env[k]) end
    end
  end
  words[#words + 1] = shell_quote(bin)
  for _, a in ipairs(argv) do words[#words + 1] = shell_quote(a) end
  local cmd = concat(words, " ")
  local stdin = "/dev/null"
  if opts.stdin then
    stdin = dir .. "/stdin"
    _M.write_file(stdin, opts.stdin)
  end
  local D = function(name) return shell_quote(dir .. "/" .. name) end
  if opts.cwd then               -- exec: the subshell becomes the binary, same pid
    cmd = fmt("( cd %s && exec %s )", shell_quote(opts.cwd), cmd)
  end
  local runner = C.moonlet_t_getpid()
  local watcher = fmt("( while kill -0 %d && kill -0 $c; do sleep 1; done 2>/dev/null;"
                      .. " kill -0 %d 2>/dev/null || kill -s KILL -- -$c $c 2>/dev/null )",
                      runner, runner)
  local line = fmt("( %s <%s >%s 2>%s & c=$!; echo $c >%s; mv %s %s; %s & wait $c; echo $? >%s;"
                   .. " mv %s %s; kill -0 %d || rm -rf %s ) </dev/null >/dev/null 2>&1 &",
                   cmd, shell_quote(stdin), D("stdout"), D("stderr"), D("pid.tmp"), D("pid.tmp"),
                   D("pid"), watcher, D("status.tmp"), D("status.tmp"), D("status"),
                   runner, shell_quote(dir))
  os.execute(line)
  local p = setmetatable({ dir = dir, bin = bin, argv = argv, cmd = cmd, group = group,
                           host = "127.0.0.1" }, Proc)
  local deadline = now() + 10
  while true do
    p.pid = tonumber(match(read_file(dir .. "/pid") or "", "%d+"))
    if p.pid then break end
    if now() >= deadline then
      remove_tree(dir)
      error("could not start " .. cmd, 3)
    end
    sleep(0.002)
  end
  procs[#procs + 1] = p
  return p
end

---Exit status (128 + signal number if killed by one), or nil while running.
function Proc:poll()
  if self.status == nil and not self.finished then
    self.status = tonumber(match(read_file(self.dir .. "/status") or "", "%d+"))
  end
  return self.status
end

---Everything the process wrote to stdout so far.
---@return string
function Proc:stdout()
  if self.finished then return self._stdout end
  return read_file(self.dir .. "/stdout") or ""
end

---Everything the process wrote to stderr so far.
---@return string
function Proc:stderr()
  if self.finished then return self._stderr end
  return read_file(self.dir .. "/stderr") or ""
end

---The process's resident memory (VmRSS, kB), from /proc.
---@return integer?
function Proc:rss_kb()
  return tonumber(match(read_file("/proc/" .. self.pid .. "/status") or "", "VmRSS:%s*(%d+)"))
end

---The process's open file descriptors, counted in /proc.
---@return integer
function Proc:fd_count()
  local n = 0
  local p = io.popen("ls /proc/" .. self.pid .. "/fd 2>/dev/null")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

---Byte offset of the end of stderr now, for :wait_log(pattern, timeout, mark).
function Proc:mark()
  return #self:stderr()
end

---Waits until a line of stderr (after byte offset `from`, default 0) matches
---the Lua pattern; returns that line and the offset after it. Raises with the
---log tail on timeout (default 10 s) or if the process exits first.
---@param pattern string
---@param timeout number?
---@param from integer?
function Proc:wait_log(pattern, timeout, from)
  timeout = timeout or DEFAULT_TIMEOUT
  local deadline = now() + timeout
  local pos = (from or 0) + 1
  while true do
    local exited = self:poll()             -- before the read: then the read is final
    local text = self:stderr()
    while true do
      local nl = find(text, "\n", pos, true)
      local last = not nl and exited ~= nil and pos <= #text
      if not nl and not last then break end
      local line = sub(text, pos, (nl or #text + 1) - 1)
      if find(gsub(line, "\r$", ""), pattern) then return gsub(line, "\r$", ""), (nl or #text) end
      pos = (nl or #text) + 1
    end
    if exited then
      error(fmt("process exited (status %d) before stderr matched %s; stderr tail:\n%s",
                exited, client.quote(pattern), tail(text)), 2)
    end
    if now() >= deadline then
      error(fmt("timeout after %gs waiting for stderr to match %s; stderr tail:\n%s",
                timeout, client.quote(pattern), tail(text)), 2)
    end
    sleep(0.01)
  end
end

---Sends a signal ("TERM", "INT", "KILL", "HUP", ... or a number) to the process.
---@param name string|integer
function Proc:signal(name)
  local sig = SIGNALS[name] or tonumber(name)
  if not sig then error("unknown signal " .. tostring(name), 2) end
  if self:poll() then return nil, "exited" end
  if C.moonlet_t_kill(self.pid, sig) ~= 0 then return nil, client.errmsg(ffi.errno()) end
  return true
end

---Exit status, or nil if the process still runs after timeout (default 10 s).
---@param timeout number?
function Proc:wait(timeout)
  local deadline = now() + (timeout or DEFAULT_TIMEOUT)
  while true do
    local s = self:poll()
    if s or now() >= deadline then return s end
    sleep(0.01)
  end
end

---SIGKILL to the process and everything in its process group.
function Proc:kill()
  if not self.finished then
    if self.group then C.moonlet_t_kill(-self.pid, 9) end
    C.moonlet_t_kill(self.pid, 9)
  end
  return self:wait(5)
end

---Keeps the output in memory, removes the temp dir, forgets the process.
function Proc:finish()
  if self.finished then return end
  self:poll()
  self._stdout, self._stderr = self:stdout(), self:stderr()
  if self.group and self.status then C.moonlet_t_kill(-self.pid, 9) end   -- leftover workers
  self.finished = true
  remove_tree(self.dir)
  untrack(self)
end

---TERM, up to `grace` (default 15) seconds to exit, then KILL. Returns the exit
---status (143 = ended by TERM, 137 = by KILL). Safe to call again.
---Raises when the process's stderr holds an AddressSanitizer/UBSan/LeakSanitizer report
---(make test-asan): a memory error must fail the suite even if every response was right.
---@param grace number?
function Proc:stop(grace)
  if not self.finished then
    if not self:poll() then
      self:signal("TERM")
      if not self:wait(grace or 15) then self:kill() end
    end
    self:finish()
    local err = self._stderr or ""
    local report = match(err, "[^\n]*Sanitizer[^\n]*") or match(err, "[^\n]*: runtime error:[^\n]*")
    if report then
      error("sanitizer report from pid " .. self.pid .. ": " .. report .. "\n" .. sub(err, -3000), 2)
    end
  end
  return self.status
end

---Convenience: client.request / client.connect against this server.
---@param method string
---@param path string
---@param opts table?
function Proc:request(method, path, opts)
  return client.request(self.port, method, path, opts)
end

---t.connect to this server's port.
---@return moonlet.testing.Conn|nil
---@return string? err
---@param timeout number?
function Proc:connect(timeout)
  return client.connect(self.port, self.host, timeout)
end

local function launch(opts, strict)
  opts = opts or {}
  local argv = { "serve" }
  if opts.app then argv[#argv + 1] = opts.app end
  for _, a in ipairs({ "--host", "127.0.0.1", "--port", tostring(opts.port or 0) }) do
    argv[#argv + 1] = a
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  local p = spawn(argv, opts)
  p.listening = false
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local deadline = now() + timeout
  local pat = "listening on (https?)://%[?([^%s/%]]+)%]?:(%d+)"
  while true do
    local exited = p:poll()
    local scheme, host, port = match(p:stdout(), pat)
    if not host then scheme, host, port = match(p:stderr(), pat) end
    if host then
      p.host, p.port, p.listening = host, tonumber(port), true
      p.url = fmt("%s://%s:%d", scheme, host, p.port)
      return p
    end
    if exited then
      if not strict then return p end
      local err = p:stderr()
      p:finish()
      error(fmt("%s exited (status %d) before listening; stderr:\n%s", p.cmd, exited, tail(err, 60)), 3)
    end
    if now() >= deadline then
      if not strict then return p end
      p:kill()
      local err = p:stderr()
      p:finish()
      error(fmt("%s did not print 'listening on' within %gs; stderr:\n%s", p.cmd, timeout,
                tail(err, 60)), 3)
    end
    sleep(0.01)
  end
end

---Starts `<bin> argv...` in the background (opts: bin, env, cwd, stdin) and returns the
---process (:poll, :wait, :stdout, :stderr, :wait_log, :kill, :stop): a client that must run
---alongside the test (a WebSocket reader, ...).
---@param argv string[]
---@param opts table?
function _M.spawn(argv, opts)
  return spawn(argv or {}, opts or {})
end

---Starts `<bin> serve <app> --host 127.0.0.1 --port 0 <args...>` and waits for
---"listening on http://HOST:PORT" (https:// with --tls-cert). opts: app, args, env (name → value, false to
---unset), bin (default $MOONLET_BIN or build/moonlet), cwd, stdin, port, timeout
---(default 10). Returns the server (.port .host .pid .url: "http://HOST:PORT" or
---"https://..."); raises with stderr
---if it exits or times out first.
---@param opts table?
function _M.server(opts)
  return launch(opts, true)
end

---Like server() but never raises on a failed start: returns the process with
---.listening false; :wait(timeout) then gives its exit status.
---@param opts table?
function _M.start(opts)
  return launch(opts, false)
end

---Runs `<bin> argv...` to completion. opts: a timeout in seconds (default 10) or
---a table { timeout, env, bin, cwd, stdin }. Returns { status, stdout, stderr };
---raises (with stderr) if it does not finish in time.
---@param argv string[]
---@param opts table?
function _M.run(argv, opts)
  if type(opts) ~= "table" then opts = { timeout = opts } end
  local p = spawn(argv or {}, opts)
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local status = p:wait(timeout)
  if not status then
    p:kill()
    p:finish()
    error(fmt("%s did not finish within %gs; stderr:\n%s", p.cmd, timeout, tail(p._stderr)), 2)
  end
  p:finish()
  return { status = status, stdout = p._stdout, stderr = p._stderr }
end

-- Ends every process still tracked (TERM, 2 s grace, KILL); returns how many ran.
-- say(line), if given, hears about each one still running.
local function stop_all(say)
  local n = 0
  for i = #procs, 1, -1 do
    local p = procs[i]
    if p and not p:poll() then
      n = n + 1
      if say then say(fmt("# stopping leftover process %d: %s", p.pid, p.cmd)) end
      p:stop(2)
    elseif p then
      p:finish()
    end
  end
  return n
end
---stop_all([say]) -> how many processes were still running: TERM, 2 s, KILL.
_M.stop_all = stop_all

local function say(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

---Stops what is left running (saying so) and removes the temp dirs; raises if a
---leftover process's log holds a sanitizer report.
function _M.cleanup()
  local ok, err = pcall(stop_all, say)
  for _, d in ipairs(tmpdirs) do remove_tree(d) end
  tmpdirs = {}
  if not ok then error(err, 0) end
end

-- Under busted, each spec file cleans up after itself.
local busted = package.loaded.busted
if type(busted) == "table" then
  busted.subscribe({ "file", "end" }, function()
    _M.cleanup()
    return nil, true
  end)
end

return _M
