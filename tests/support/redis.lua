-- A throwaway redis-server for the specs: a free port of 127.0.0.1, no persistence
-- (--save "" --appendonly no), in the foreground as a process the test runner tracks (it
-- is stopped even when a spec dies before stop()).
--   local rs = require("tests.support.redis").start()   -- raises if it cannot
--   local rs = require("tests.support.redis").start{ password = "s3cret" }
--   rs.port, rs.url   redis://127.0.0.1:PORT (redis://:PASSWORD@... with a password)
--   rs.proc           the server's process (moonlet.testing's: .pid, :signal, :stderr)
--   rs:cli(...)       runs redis-cli against it with these arguments; returns its output
--                     (--raw: one reply a line); raises when redis-cli fails
--   rs:stop()         stops it (SIGTERM, then SIGKILL)
local t = require "moonlet.testing"

local fmt, match = string.format, string.match

local _M = {}
local Redis = {}
local redis_mt = { __index = Redis }

function _M.start(opts)
  opts = opts or {}
  local self = setmetatable({ password = opts.password, port = t.free_port() }, redis_mt)
  local args = { "--port", tostring(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--protected-mode", "no", "--dir", t.tmpdir(),
                 "--enable-debug-command", "local" }   -- DEBUG SLEEP: a server that stalls
  if opts.password then
    args[#args + 1] = "--requirepass"
    args[#args + 1] = opts.password
  end
  local ok, proc = pcall(t.spawn, args, { bin = "redis-server" })
  if not ok then error("redis-server did not start (scripts/deps.sh test installs it): " .. proc, 2) end
  self.proc = proc
  local deadline = t.now() + 10
  while true do   -- ready when it answers PING
    local res = t.run(self:argv("PING"), { bin = "redis-cli" })
    if match(res.stdout, "PONG") then break end
    if t.now() > deadline or proc:poll() then
      proc:stop(1)
      error("redis-server did not answer PING:\n" .. proc:stdout() .. proc:stderr(), 2)
    end
    t.sleep(0.05)
  end
  self.url = opts.password and fmt("redis://:%s@127.0.0.1:%d", opts.password, self.port)
             or fmt("redis://127.0.0.1:%d", self.port)
  return self
end

function Redis:argv(...)
  local argv = { "--raw", "-h", "127.0.0.1", "-p", tostring(self.port) }
  if self.password then
    argv[#argv + 1] = "--no-auth-warning"
    argv[#argv + 1] = "-a"
    argv[#argv + 1] = self.password
  end
  for _, a in ipairs({ ... }) do argv[#argv + 1] = tostring(a) end
  return argv
end

function Redis:cli(...)
  local res = t.run(self:argv(...), { bin = "redis-cli" })
  if res.status ~= 0 then error("redis-cli failed: " .. res.stdout .. res.stderr, 2) end
  return res.stdout
end

function Redis:stop()
  if not self.proc then return end
  self.proc:stop(5)
  self.proc = nil
end

return _M
