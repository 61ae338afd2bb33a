-- A throwaway PostgreSQL cluster for the specs: initdb in a private temp dir, postgres on
-- a free port of 127.0.0.1 (its socket in the same dir), a test user and database.
--   local pg = require("tests.support.pg").start()   -- raises if it cannot
--   pg.url        postgres://moonlet:secret@127.0.0.1:PORT/moonlet_test?sslmode=disable
--   pg:psql(sql)  runs sql as the superuser, returns the unaligned output
--   pg:restart()  a fast restart (every client connection is cut)
--   pg:stop()     stops it at once and removes the directory
-- We run as root in CI and containers: the server runs as the `postgres` user that
-- Debian's postgresql package creates.
local t = require "moonlet.testing"

local fmt, gsub, match = string.format, string.gsub, string.match
local q = t.shell_quote

local _M = {}
local Pg = {}
local pg_mt = { __index = Pg }

local function sh(cmd)
  local f = assert(io.popen(cmd .. " 2>&1; echo \"exit=$?\"", "r"))
  local out = f:read("*a")
  f:close()
  local code = tonumber(match(out, "exit=(%d+)%s*$"))
  return code == 0, (gsub(out, "exit=%d+%s*$", ""))
end

local function must(cmd, what)
  local ok, out = sh(cmd)
  if not ok then error(what .. " failed: " .. cmd .. "\n" .. out, 3) end
  return out
end

local function bindir()
  local _, out = sh("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1")
  local dir = match(out, "(/%S+)")
  if not dir or not sh("test -x " .. q(dir .. "/initdb")) then
    error("PostgreSQL server not found in /usr/lib/postgresql/*/bin (scripts/deps.sh test installs it)", 3)
  end
  return dir
end

-- `runuser -u postgres --` when we are root (initdb refuses root), nothing otherwise. It
-- starts from `/`: in a directory postgres may not enter (a checkout under /root) psql and
-- initdb warn "could not change directory", and that line would mix with their output.
local function as_postgres()
  local _, uid = sh("id -u")
  if match(uid, "^0%s") then return "cd / && runuser -u postgres -- " end
  return ""
end

function _M.start()
  local self = setmetatable({ bin = bindir(), as = as_postgres() }, pg_mt)
  local _, dir = sh("mktemp -d /tmp/moonlet-pg.XXXXXX")
  self.dir = match(dir, "(/%S+)")
  self.data = self.dir .. "/data"
  if self.as ~= "" then must("chown postgres: " .. q(self.dir), "chown") end
  must(fmt("%s%s/initdb -D %s -U postgres -E UTF8 --no-sync --auth-local=trust "
           .. "--auth-host=scram-sha-256", self.as, self.bin, q(self.data)), "initdb")
  self.port = t.free_port()
  self.opts = fmt("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                  .. "-c synchronous_commit=off -c max_connections=200", self.port, self.dir)
  self:pg_ctl("start")
  self:psql("CREATE USER moonlet PASSWORD 'secret'")
  self:psql("CREATE DATABASE moonlet_test OWNER moonlet")
  self.url = fmt("postgres://moonlet:secret@127.0.0.1:%d/moonlet_test?sslmode=disable", self.port)
  return self
end

function Pg:pg_ctl(cmd)
  must(fmt("%s%s/pg_ctl -D %s -l %s -o %s -w -t 30 %s %s", self.as, self.bin, q(self.data),
           q(self.dir .. "/log"), q(self.opts), cmd == "start" and "" or "-m fast", cmd), "pg_ctl " .. cmd)
  must(fmt("%s/pg_isready -q -h 127.0.0.1 -p %d -t 10", self.bin, self.port), "pg_isready")
end

-- Runs sql as the superuser over the socket; returns the output (tuples only, unaligned).
function Pg:psql(sql, db)
  return must(fmt("%s%s/psql -X -q -A -t -v ON_ERROR_STOP=1 -h %s -p %d -U postgres -d %s -c %s",
                  self.as, self.bin, q(self.dir), self.port, db or "postgres", q(sql)), "psql")
end

function Pg:restart()
  self:pg_ctl("restart")
end

function Pg:stop()
  if not self.dir then return end
  sh(fmt("%s%s/pg_ctl -D %s -m immediate -w stop", self.as, self.bin, q(self.data)))
  sh("rm -rf " .. q(self.dir))
  self.dir = nil
end

return _M
