-- moonlet serve --workers N: a supervisor and its worker processes, seen from the outside
-- (/proc, signals, sockets, wrk): restarts, SIGHUP reloads under load with no failed
-- request, bad code on reload, graceful stops, ports in use, orphans.
local t = require "moonlet.testing"
local fmt = string.format

local APP = "tests/apps/workers"

-- The processes whose parent is pid.
local function children(pid)
  local out = {}
  local p = io.popen("ps -o pid= --ppid " .. pid)
  for line in p:lines() do out[#out + 1] = tonumber(line:match("%d+")) end
  p:close()
  table.sort(out)
  return out
end

-- Did the shell command succeed? (os.execute says 0 or true, as LuaJIT is built)
local function sh(cmd)
  local r = os.execute(cmd)
  return r == 0 or r == true
end

local function alive(pid)
  return sh("kill -0 " .. pid .. " 2>/dev/null")
end

local function get(srv, path)
  local r = assert(t.request(srv.port, "GET", path or "/pid", { timeout = 5 }))
  assert.are.equal(200, r.status)
  return r:json()
end

-- The set of pids that answered n requests, each on a new connection.
local function answering(srv, n)
  local pids = {}
  for _ = 1, n do pids[get(srv).pid] = true end
  return pids
end

local function keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- Polls fn until it returns true (deadline in seconds); raises with what with the last
-- value otherwise.
local function eventually(what, fn, timeout)
  local deadline = t.now() + (timeout or 5)
  local last
  while t.now() < deadline do
    local ok, v = fn()
    if ok then return v end
    last = v
    t.sleep(0.02)
  end
  error("timeout waiting for " .. what .. ": " .. tostring(last), 2)
end

-- The app's source with a version string of its own.
local function app_source(version)
  local src = assert(t.read_file(APP .. "/app.lua"))
  return (src:gsub('version = "v1"', fmt('version = %q', version)))
end

-- wrk's summary: requests, socket errors (connect, read, write, timeout), non-2xx.
local function wrk_summary(out)
  local s = { requests = tonumber(out:match("(%d+) requests in")), errors = 0, non2xx = 0 }
  local c, r, w, to = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  if c then s.errors = tonumber(c) + tonumber(r) + tonumber(w) + tonumber(to) end
  s.non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  return s
end

describe("serve --workers", function()
  it("runs a supervisor and N workers that all answer on one port", function()
    local srv = t.server{ app = APP, args = { "--workers", "2" } }
    local kids = children(srv.pid)
    assert.are.equal(2, #kids)
    -- the supervisor never loads the app: it is not among those who answer
    local pids
    eventually("both workers to answer", function()
      pids = answering(srv, 20)
      return #keys(pids) == 2, table.concat(keys(pids), ",")
    end)
    assert.are.same(kids, keys(pids))
    assert.is_nil(pids[srv.pid])
    -- a worker's socket (descriptor 3) is close-on-exec: what the app runs does not get it
    for _, pid in ipairs(kids) do
      local info = assert(t.read_file(fmt("/proc/%d/fdinfo/3", pid)))
      local flags = tonumber(info:match("flags:%s*(%d+)"), 8)
      assert.are.equal(1, math.floor(flags / (2 * 8^6)) % 2, info)   -- O_CLOEXEC, 02000000
      assert.matches("socket:", io.popen(fmt("readlink /proc/%d/fd/3", pid)):read("*a"))
    end
    -- their log lines say which worker wrote them
    srv:wait_log("info  %[worker 0%] GET /pid 200", 5)
    srv:wait_log("info  %[worker 1%] GET /pid 200", 5)
    assert.are.equal(0, srv:stop())
  end)

  it("restarts a worker killed with SIGKILL while a client keeps sending requests", function()
    local srv = t.server{ app = APP, args = { "--workers", "2", "--access-log", "off" } }
    local before = children(srv.pid)
    local load = t.spawn({ "-t1", "-c4", "-d3s", srv.url .. "/pid" }, { bin = "wrk" })
    t.sleep(0.3)
    local victim = before[1]
    assert.is_true(sh("kill -9 " .. victim))
    srv:wait_log(fmt("error worker %%d %%(pid %d%%) killed by signal 9 %%(Killed%%); restarting",
                     victim), 5)
    -- every request on a new connection from now on succeeds (those for the dead
    -- worker's socket wait in its queue until the new worker takes them)
    local ok = 0
    for _ = 1, 60 do
      local r = t.request(srv.port, "GET", "/pid", { timeout = 5 })
      if r and r.status == 200 then ok = ok + 1 end
    end
    assert.are.equal(60, ok)
    local after = children(srv.pid)
    assert.are.equal(2, #after)
    assert.is_true(after[1] ~= victim and after[2] ~= victim)
    assert.is_true(not alive(victim))
    assert.is_truthy(load:wait(10))
    assert.are.equal(0, srv:stop())
  end)

  it("backs off a worker that keeps dying, and resets the backoff once it lives", function()
    local srv = t.server{ app = APP, args = { "--workers", "1", "--access-log", "off" } }
    local at = srv:mark()
    t.sleep(1.1)   -- lived long enough: restarted at once
    local pid = children(srv.pid)[1]
    os.execute("kill -9 " .. pid)
    srv:wait_log("worker 0 %(pid " .. pid .. "%) killed by signal 9 %(Killed%); restarting$", 5, at)
    local line, pos = srv:wait_log("worker 0 %(pid %d+%) restarted", 5, at)
    pid = tonumber(line:match("pid (%d+)"))
    os.execute("kill -9 " .. pid)   -- lived < 1 s: 0.1 s, then 0.2 s
    local _, pos2 = srv:wait_log("worker 0: next start in 0%.1 s", 5, pos)
    line, pos = srv:wait_log("worker 0 %(pid %d+%) restarted", 5, pos2)
    pid = tonumber(line:match("pid (%d+)"))
    os.execute("kill -9 " .. pid)
    srv:wait_log("worker 0: next start in 0%.2 s", 5, pos)
    eventually("a worker again", function() return #children(srv.pid) == 1 end)
    assert.are.equal(200, assert(t.request(srv.port, "GET", "/pid")).status)
    assert.are.equal(0, srv:stop())
  end)

  it("reloads on SIGHUP under wrk load with zero failed requests, serving the new code",
     function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("v1"))
    local srv = t.server{ app = dir, args = { "--workers", "2", "--access-log", "off" } }
    local first = children(srv.pid)
    local load = t.spawn({ "-t2", "-c16", "-d4s", srv.url .. "/pid" }, { bin = "wrk" })
    t.sleep(0.4)
    for gen = 2, 5 do
      local at = srv:mark()
      t.write_file(dir .. "/app.lua", app_source("v" .. gen))
      assert(srv:signal("HUP"))
      srv:wait_log(fmt("reload: generation %d ready, stopping generation %d", gen, gen - 1), 5, at)
      eventually("v" .. gen, function()
        local v = get(srv).version
        return v == "v" .. gen, v
      end)
      t.sleep(0.4)
    end
    assert.are.equal(0, load:wait(15))
    local s = wrk_summary(load:stdout())
    assert.is_true(s.requests > 1000, load:stdout())
    assert.are.same({ errors = 0, non2xx = 0 }, { errors = s.errors, non2xx = s.non2xx },
                    load:stdout())
    -- new processes, the same number, and the old ones gone
    local now = children(srv.pid)
    assert.are.equal(2, #now)
    for _, pid in ipairs(first) do assert.is_true(not alive(pid)) end
    assert.are.same({ "v5" }, (function()
      local seen = {}
      for _ = 1, 10 do seen[get(srv).version] = true end
      return keys(seen)
    end)())
    assert.are.equal(0, srv:stop())
  end)

  it("keeps the old workers serving when the new code does not load, then reloads", function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("v1"))
    local srv = t.server{ app = dir, args = { "--workers", "2" } }
    local old = children(srv.pid)
    local at = srv:mark()
    t.write_file(dir .. "/app.lua", "local broken = \n")
    assert(srv:signal("HUP"))
    srv:wait_log("app%.lua:2: unexpected symbol near '<eof>'", 5, at)
    srv:wait_log("error reload: worker %d %(pid %d+%) of generation 2 exited with status 2 before "
                 .. "it was ready; generation 1 keeps serving", 5, at)
    eventually("the failed generation gone", function()
      local kids = children(srv.pid)
      return #kids == 2 and kids[1] == old[1] and kids[2] == old[2], #kids
    end)
    for _ = 1, 10 do assert.are.equal("v1", get(srv).version) end
    at = srv:mark()
    t.write_file(dir .. "/app.lua", app_source("v2"))
    assert(srv:signal("HUP"))
    srv:wait_log("reload: generation 2 ready, stopping generation 1", 5, at)
    eventually("v2", function() return get(srv).version == "v2" end)
    assert.are.equal(0, srv:stop())
  end)

  it("coalesces SIGHUPs that come during a reload into one more reload", function()
    -- workers that take 0.4 s to start: the reload is still running when the others come
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", (app_source("v1"):gsub("\nreturn app", [[

app:on_startup(function() moonlet.sleep(0.4) end)
return app]])))
    local srv = t.server{ app = dir, args = { "--workers", "2", "--access-log", "off" } }
    local at = srv:mark()
    assert(srv:signal("HUP"))
    srv:wait_log("reload: starting generation 2", 5, at)
    for _ = 1, 2 do
      t.sleep(0.05)   -- apart: the kernel merges a signal sent while one is pending
      assert(srv:signal("HUP"))
    end
    srv:wait_log("reload: SIGHUP during a reload: one more reload when it is over", 5, at)
    srv:wait_log("reload: generation 2 ready, stopping generation 1", 5, at)
    srv:wait_log("reload: generation 3 ready, stopping generation 2", 5, at)
    eventually("generation 2 gone", function() return #children(srv.pid) == 2 end)
    t.sleep(0.3)
    assert.is_nil(srv:stderr():find("generation 4", at + 1, true))
    assert.are.equal(200, assert(t.request(srv.port, "GET", "/pid")).status)
    assert.are.equal(0, srv:stop())
  end)

  it("stops at once on a second SIGINT, dropping what runs, exiting 1", function()
    local srv = t.server{ app = APP, args = { "--workers", "2" } }
    local c = assert(srv:connect())
    c:send("GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    assert(srv:signal("INT"))
    srv:wait_log("shutting down: stopping 2 worker%(s%)", 5)
    t.sleep(0.2)
    assert.is_nil(srv:poll())   -- the first one waits for the request
    assert(srv:signal("INT"))
    assert.are.equal(1, srv:wait(5))
    srv:wait_log("asked to stop again: the workers stop now", 1)
    srv:wait_log("%[worker %d%] asked to stop again: closing 1 connection%(s%), dropping 1 "
                 .. "request%(s%) still running", 1)
    srv:wait_log("warn  worker %d %(pid %d+%) exited with status 1", 1)
    c:close()
    srv:finish()
  end)

  it("stops on SIGTERM after an in-flight request completes, exiting 0", function()
    local srv = t.server{ app = APP, args = { "--workers", "2" } }
    local c = assert(srv:connect())
    c:send("GET /slow?s=0.8 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    local kids = children(srv.pid)
    assert(srv:signal("TERM"))
    local r = assert(c:read_response(5))
    assert.are.equal(200, r.status)
    assert.is_true(r:json().slept)
    assert.are.equal("close", r.headers["connection"])
    c:close()
    assert.are.equal(0, srv:wait(10))
    srv:wait_log("shutting down: stopping 2 worker%(s%)", 1)
    for _, pid in ipairs(kids) do assert.is_true(not alive(pid)) end
    srv:finish()
  end)

  it("fails at once (exit 2) when the port is in use, before starting any worker", function()
    local l = assert(t.listen(0))
    local p = t.start{ app = APP, port = l.port, args = { "--workers", "2" } }
    assert.are.equal(2, p:wait(5))
    assert.matches(fmt("cannot listen on 127%%.0%%.0%%.1:%d: address already in use", l.port),
                   p:stderr())
    assert.is_nil(p:stderr():find("starting", 1, true))
    p:finish()
    l:close()
    -- another supervisor on the port is "in use" too, though both would set SO_REUSEPORT
    local srv = t.server{ app = APP, args = { "--workers", "1" } }
    local second = t.start{ app = APP, port = srv.port, args = { "--workers", "1" } }
    assert.are.equal(2, second:wait(5))
    assert.matches("address already in use", second:stderr())
    second:finish()
    assert.are.equal(0, srv:stop())
  end)

  it("exits 2 when the app does not load in the first workers, leaving none behind", function()
    local p = t.start{ app = "tests/apps/syntax_error", args = { "--workers", "2" } }
    assert.are.equal(2, p:wait(10))
    assert.matches("moonlet %[worker %d%]: .*app%.lua:%d+:", p:stderr())
    assert.matches("before it was ready: stopping", p:stderr())
    assert.is_nil(p:stdout():find("listening on", 1, true))
    p:finish()
  end)

  it("starts one worker per core with --workers 0", function()
    local nproc = tonumber(io.popen("nproc"):read("*l"))
    local srv = t.server{ app = APP, args = { "--workers", "0" } }
    assert.are.equal(nproc, #children(srv.pid))
    srv:wait_log(fmt("%d worker%%(s%%) serving", nproc), 1)
    assert.are.equal(0, srv:stop())
  end)

  it("refuses --workers with --reload", function()
    local r = t.run({ "serve", APP, "--workers", "2", "--reload" })
    assert.are.equal(2, r.status)
    assert.matches("%-%-workers and %-%-reload do not go together", r.stderr)
    r = t.run({ "serve", APP, "--workers", "x" })
    assert.are.equal(2, r.status)
    assert.matches("%-%-workers: expected a number", r.stderr)
  end)

  it("leaves no worker behind when the supervisor is killed with SIGKILL", function()
    local srv = t.server{ app = APP, args = { "--workers", "2" } }
    local kids = children(srv.pid)
    assert.are.equal(2, #kids)
    assert(srv:signal("KILL"))   -- the supervisor alone, not its process group
    eventually("the workers to exit", function()
      return not alive(kids[1]) and not alive(kids[2])
    end)
    srv:finish()
  end)

  it("passes SIGUSR1 on: the workers reopen the access log file", function()
    local dir = t.tmpdir()
    local log = dir .. "/access.log"
    local srv = t.server{ app = APP, args = { "--workers", "2", "--access-log-file", log } }
    get(srv)
    eventually("a line in the log", function() return (t.read_file(log) or ""):find("GET /pid") end)
    os.rename(log, log .. ".1")
    assert(srv:signal("USR1"))
    eventually("a new log file", function()
      get(srv)
      return (t.read_file(log) or ""):find("GET /pid") ~= nil
    end)
    assert.are.equal(0, srv:stop())
  end)

  it("tags the access log with the worker's slot: [worker N] in text, \"worker\": N in JSON",
     function()
    local dir = t.tmpdir()
    local text, json = dir .. "/text.log", dir .. "/json.log"
    local a = t.server{ app = APP, args = { "--workers", "2", "--access-log-file", text } }
    local b = t.server{ app = APP, args = { "--workers", "2", "--access-log", "json",
                                            "--access-log-file", json } }
    get(a)
    get(b)
    eventually("a line in each log", function()
      return (t.read_file(text) or ""):find("GET /pid") and (t.read_file(json) or ""):find("/pid")
    end)
    assert.are.equal(0, a:stop())
    assert.are.equal(0, b:stop())
    assert.matches("%[worker [01]%] GET /pid", t.read_file(text))
    local line = t.read_file(json):match("[^\n]*/pid[^\n]*")
    local o = require("cjson").decode(line)
    assert.are.same("/pid", o.path)
    assert.is_truthy(o.worker == 0 or o.worker == 1)
  end)

  it("serves IPv6 hosts as IPv4 ones", function()
    if not sh("grep -q '^0*1 .* lo$' /proc/net/if_inet6") then
      pending("no ::1 here")
      return
    end
    local srv = t.server{ app = APP, args = { "--workers", "2", "--host", "::1" } }
    assert.are.equal("::1", srv.host)
    local out = io.popen(fmt("curl -sg http://[::1]:%d/pid", srv.port)):read("*a")
    assert.matches('"version":"v1"', out)
    assert.are.equal(0, srv:stop())
  end)
end)

describe("serve --workers with moonlet.shared", function()
  local INCR = "GET /incr?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

  it("counts exactly across 4 workers, each on its loop and its pool threads at once", function()
    local srv = t.server{ app = APP, args = { "--workers", "4", "--pool-size", "4",
                                              "--access-log", "off" } }
    local r = t.concurrent(srv.port, 120, fmt(INCR, 300), 60)
    assert.are.equal(120, r.ok)
    local count = get(srv, "/count")
    assert.are.equal(120 * 600, count.n)
    -- the requests spread over the workers (SO_REUSEPORT), each counting into the same entry
    local workers, requests = 0, 0
    for _, c in pairs(count.by) do
      workers, requests = workers + 1, requests + c
    end
    assert.are.equal(120, requests)
    assert.is_true(workers >= 2, "requests reached " .. workers .. " worker(s)")
    assert.are.equal(0, srv:stop())
  end)

  it("keeps counting when workers are killed with SIGKILL in the middle of increments", function()
    local srv = t.server{ app = APP, args = { "--workers", "4", "--pool-size", "2",
                                              "--access-log", "off" } }
    local load = t.spawn({ "-t1", "-c8", "-d3s", srv.url .. "/incr?n=50" }, { bin = "wrk" })
    for _ = 1, 5 do   -- a worker SIGKILLed every 0.3 s, likely while it holds the lock
      t.sleep(0.3)
      local kids = children(srv.pid)
      if #kids > 0 then sh("kill -9 " .. kids[1 + math.random(#kids) - 1]) end
    end
    load:wait(20)
    eventually("4 workers again", function()
      local n = #children(srv.pid)
      return n == 4, n
    end, 15)
    -- nobody is wedged on a lock a dead worker held: every worker answers and counts
    local before = get(srv, "/count").n
    local r = t.concurrent(srv.port, 40, fmt(INCR, 10), 30)
    assert.are.equal(40, r.ok)
    local after = get(srv, "/count").n
    -- exactly 800 more (a dictionary a dead worker was changing was emptied, and logged, by
    -- the next process to take the lock, long before: wrk kept them busy for 1.5 s more)
    assert.are.equal(before + 800, after)
    srv:stop()
  end)
end)
