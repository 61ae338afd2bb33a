-- Embedding (core/moonlet.h): hosts on the embedder's libuv loop, several hosts in one
-- process, logging through the embedder's callback, signals left alone. The program is
-- tests/embed_hosts.c (see its top comment); requests go through real sockets.
local t = require "moonlet.testing"

local BIN = os.getenv("MOONLET_EMBED_HOSTS_BIN") or "build/tests/embed_hosts"

-- Starts embed_hosts MODE [args...] APPDIR... and waits for its n hosts' ports.
local function start(mode, args, n, env)
  local dir = t.tmpdir()
  local stop = dir .. "/stop"
  local argv = { mode, "--stop-file", stop }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = t.spawn(argv, { bin = BIN, env = env })
  p.stop_file = stop
  p.ports = {}
  for i = 1, n do
    local line = p:wait_log("^host " .. i .. " listening on http://127%.0%.0%.1:%d+$", 10)
    p.ports[i] = tonumber(line:match(":(%d+)$"))
  end
  return p
end

-- Has the program stop its hosts (ml_host_stop from a thread of its own); its status.
local function finish(p)
  t.write_file(p.stop_file, "")
  return p:wait(20)
end

local function get(port, path)
  return assert(t.request(port, "GET", path))
end

-- n requests for `path` to port, all at once, from another process (curl --parallel)
local function curl_parallel(port, path, n)
  local argv = { "-s", "-Z", "--parallel-max", tostring(n), "-o", "/dev/null",
                 "-w", "%{http_code}\\n" }
  for _ = 1, n do argv[#argv + 1] = "http://127.0.0.1:" .. port .. path end
  return t.spawn(argv, { bin = "curl" })
end

describe("embedding: two hosts on the embedder's loop", function()
  it("serve the same app twice side by side, pool busy, then stop and leave the loop clean",
     function()
    local p = start("loop", { "tests/apps/pool", "tests/apps/pool" }, 2)
    local a, b = p.ports[1], p.ports[2]
    assert.are_not.same(a, b)
    -- both pools busy at once: curl on host 2 while this process loads host 1
    local c = curl_parallel(b, "/p/sleep?s=0.2&tag=b", 8)
    local r = t.concurrent(a, 8, "GET /p/sleep?s=0.2&tag=a HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(8, r.ok)
    assert.are.same(0, c:wait(20))
    local codes = select(2, c:stdout():gsub("200", ""))
    assert.are.same(8, codes)
    assert.are.same({ id = 3, in_pool = true, method = "GET", path = "/p/3" },
                    get(b, "/p/3"):json())
    -- moonlet.shared is the process's: one dictionary name, one dictionary, for both hosts
    assert.are.same({ v = 1 }, get(a, "/shared/incr?k=both"):json())
    assert.are.same({ v = 2 }, get(b, "/shared/incr?k=both"):json())
    assert.are.same(0, finish(p))
    local err = p:stderr()
    assert.matches("host 1 stopped %(dropped 0%)", err)
    assert.matches("host 2 stopped %(dropped 0%)", err)
    assert.matches("2 host%(s%) stopped, loop closed: 0", err)
    -- refused on a borrowed loop, with a message instead of running it
    assert.matches("ml_host_run: the host is on the embedder's loop", err)
    assert.is_falsy(err:find("did not refuse", 1, true))
  end)

  it("send every log line, access log included, to the embedder's callback", function()
    local p = start("loop", { "tests/apps/pool" }, 1)
    assert.are.same(200, get(p.ports[1], "/p/1").status)
    p:wait_log("^log: info GET /p/1 200 [%d.]+ms %d+B 127%.0%.0%.1:%d+ %-$", 5)
    assert.are.same(0, finish(p))
    local err = p:stderr()
    assert.matches("log: info shutting down: %d+ connection%(s%) open", err)
    assert.is_falsy(err:find("wrong user", 1, true))
    -- nothing went to stderr on its own (those lines start with a timestamp)
    assert.is_falsy(err:find("\n%d%d%d%d%-%d%d%-%d%dT") or err:find("^%d%d%d%d%-%d%d%-%d%dT"))
  end)

  it("leave SIGPIPE to the embedder when ignore_sigpipe is 0", function()
    local p = start("loop", { "tests/apps/stall" }, 1)
    -- a client gone before its response is written: the write fails, nothing dies
    local conn = assert(t.connect(p.ports[1]))
    conn:send("GET /block?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
    conn:close()
    t.sleep(0.5)
    assert.are.same(200, get(p.ports[1], "/hello").status)
    assert.are.same(0, finish(p))
    assert.matches("SIGPIPE as the program left it", p:stderr())
  end)

  it("run the startup hooks without running the loop: the callback says when it listens",
     function()
    local db = t.tmpdir() .. "/life.db"
    local p = start("loop", { "tests/apps/lifespan" }, 1, { LIFESPAN_DB = db })
    -- the callback ran after both hooks, which waited (sleep, SQLite) on the loop
    local res = get(p.ports[1], "/state"):json()
    assert.are.same({ true, "1 then 2" }, { res.ready, res.order })
    assert.are.same(0, finish(p))
    assert.matches("shutdown hook done", p:stderr())
  end)

  it("report a failed startup hook through the callback, then free the host", function()
    local p = t.spawn({ "loop", "--stop-file", t.tmpdir() .. "/stop", "tests/apps/lifespan" },
                      { bin = BIN, env = { LIFESPAN_DB = t.tmpdir() .. "/l.db",
                                           LIFESPAN_FAIL = "1" } })
    assert.are.same(0, p:wait(20))
    local err = p:stderr()
    assert.matches("host 1: listen failed: on_startup hook failed: .*database unreachable", err)
    assert.matches("1 host%(s%) stopped, loop closed: 0", err)
  end)

  it("refuse an app.lua that waits at load time, which would run the loop", function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", [[
      local moonlet = require "moonlet"
      moonlet.sleep(0.01)
      return moonlet.app{}
    ]])
    local p = t.spawn({ "loop", "--stop-file", dir .. "/stop", dir }, { bin = BIN })
    assert.are.same(0, p:wait(20))
    local err = p:stderr()
    assert.matches("host 1: .*app%.lua waits while it loads, which would run the embedder's "
                   .. "loop %(ml_host_new_on_loop%): wait in app:on_startup instead", err)
    assert.matches("loop closed: 0", err)
  end)

  it("reload changed code (--reload) from a callback of its own", function()
    local dir = t.tmpdir()
    local code = [[
      local moonlet = require "moonlet"
      local app = moonlet.app{}
      app:on_startup(function() moonlet.sleep(0.05) end)
      app:get("/v", function() return { v = "%s" } end)
      return app
    ]]
    t.write_file(dir .. "/app.lua", code:format("one"))
    local p = start("loop", { "--reload", dir }, 1)
    assert.are.same({ v = "one" }, get(p.ports[1], "/v"):json())
    local mark = p:mark()
    t.write_file(dir .. "/app.lua", code:format("two"))
    p:wait_log("reloaded " .. dir:gsub("%p", "%%%0"), 10, mark)
    assert.are.same({ v = "two" }, get(p.ports[1], "/v"):json())
    assert.are.same(0, finish(p))
    assert.matches("loop closed: 0", p:stderr())
  end)

  it("with exit_on_stuck_stop 0, wait for a handler that holds the loop past the stop",
     function()
    local p = start("loop", { "--graceful-timeout", "0.1", "--keep-on-stuck-stop",
                              "tests/apps/stall" }, 1)
    local conn = assert(t.connect(p.ports[1]))
    conn:send("GET /block?s=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    assert.are.same(0, finish(p))   -- not _exit(1): the process lived on
    local err = p:stderr()
    assert.matches("GET /block holds the event loop %(for %d+ ms%) and cannot be stopped: "
                   .. "waiting for it", err)
    -- the handler ended, so did the stop: no _exit
    assert.matches("log: info GET /block%?s=1%.5 200", err)
    assert.matches("1 host%(s%) stopped, loop closed: 0", err)
    conn:close()
  end)
end)

describe("embedding: two hosts on two threads, each on a loop of its own", function()
  it("serve two apps side by side, pool busy, and stop from a third thread", function()
    local p = start("threads", { "tests/apps/pool", "tests/apps/stall" }, 2)
    local a, b = p.ports[1], p.ports[2]
    local c = curl_parallel(b, "/sleep?s=0.2", 8)
    local r = t.concurrent(a, 8, "GET /p/sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(8, r.ok)
    assert.are.same(0, c:wait(20))
    assert.are.same(8, select(2, c:stdout():gsub("200", "")))
    assert.are.same({ message = "hello" }, get(b, "/hello"):json())
    assert.are.same(404, get(a, "/hello").status)   -- each host its own app
    assert.are.same(0, finish(p))
    local err = p:stderr()
    assert.matches("host 1 stopped %(dropped 0%)", err)
    assert.matches("host 2 stopped %(dropped 0%)", err)
    assert.matches("SIGPIPE as the program left it", err)
  end)
end)
