-- Embedding (issue 17): a C program's own module in every Lua state (ml_host_preload, the
-- user pointer), calls into the loop from the program's threads (ml_host_post,
-- ml_host_emit -> app:on_event), the shared library with pkg-config, and
-- examples/embed built against the installed library. The C side is tests/embed_host.c
-- (fed commands through a fifo) and examples/embed/counter.c; everything over real sockets.
local t = require "moonlet.testing"

local q = t.shell_quote
local build = (os.getenv("MOONLET_BIN") or "build/moonlet"):match("^(.*)/[^/]*$") or "build"
local HOST_BIN = build .. "/tests/embed_host"

local function sh(cmd, opts)
  opts = opts or {}
  local r = t.run({ "-c", cmd }, { bin = "/bin/sh", cwd = opts.cwd, timeout = opts.timeout or 60,
                                   env = opts.env })
  assert(r.status == 0, cmd .. " failed (" .. r.status .. "):\n" .. r.stdout .. r.stderr)
  return r.stdout
end

-- Polls until fn() returns a value (or raises after timeout seconds, naming what).
local function wait_for(what, fn, timeout)
  local deadline = t.now() + (timeout or 10)
  while true do
    local v = fn()
    if v then return v end
    if t.now() > deadline then error("timed out waiting for " .. what, 2) end
    t.sleep(0.01)
  end
end

-- Starts tests/embed_host.c serving appdir; its stdin is a fifo we write commands into,
-- each answered by one line on its stdout.
local function embed_host(appdir, args)
  local dir = t.tmpdir()
  local h = { dir = dir, lines = 0 }
  os.execute("mkfifo " .. q(dir .. "/in"))
  os.execute("(" .. q(HOST_BIN) .. " " .. q(appdir) .. " " .. (args or "") .. " <" ..
             q(dir .. "/in") .. " >" .. q(dir .. "/out") .. " 2>" .. q(dir .. "/err") ..
             "; echo $? >" .. q(dir .. "/status")  .. ") &")
  h.fifo = assert(io.open(dir .. "/in", "w"))
  h.fifo:setvbuf("no")
  local function out() return t.read_file(dir .. "/out") or "" end
  function h.stderr() return t.read_file(dir .. "/err") or "" end
  h.port = tonumber(wait_for("embed_host to listen", function()
    local p = out():match("listening on http://127%.0%.0%.1:(%d+)")
    if not p and (t.read_file(dir .. "/status") or "") ~= "" then
      error("embed_host exited: " .. h.stderr())
    end
    return p
  end))
  h.lines = 1
  -- Sends one command; returns its answer line.
  function h.cmd(line, timeout)
    h.fifo:write(line .. "\n")
    h.lines = h.lines + 1
    return wait_for("the answer to " .. line, function()
      local all = {}
      for l in out():gmatch("[^\n]+") do all[#all + 1] = l end
      return all[h.lines]
    end, timeout)
  end
  -- Closes stdin: the program stops the host; returns its exit status.
  function h.finish()
    h.fifo:close()
    local status = wait_for("embed_host to exit", function()
      local s = t.read_file(dir .. "/status") or ""
      return s ~= "" and tonumber(s)
    end, 20)
    return status, out()
  end
  function h.wait_log(pattern)
    return wait_for("a log line matching " .. pattern, function()
      return h.stderr():match(pattern)
    end)
  end
  return h
end

local function get(port, path)
  local res = assert(t.request(port, "GET", path))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

-- 200 POSTs to path_a at once, then 200 to path_b; returns how much the module's total
-- (read with a POST to read_path) grew meanwhile.
local function adds_at_once(port, path_a, path_b, read_path)
  local function total() return assert(t.request(port, "POST", read_path)):json().total end
  local function posts(path)
    return t.concurrent(port, 200, "POST " .. path .. " HTTP/1.1\r\nHost: x\r\n" ..
                        "Content-Length: 0\r\nConnection: close\r\n\r\n")
  end
  local before = total()
  local a, b = posts(path_a), posts(path_b)
  assert.are.same({ 200, 200 }, { a.ok, b.ok })
  return total() - before
end

describe("ml_host_preload", function()
  local h
  lazy_setup(function()
    h = embed_host("tests/apps/embed", "--pool-size 2 --executor-size 1")
  end)
  lazy_teardown(function() if h then h.finish() end end)

  it("require gives the C module in the loop's state, with the user pointer", function()
    local s = get(h.port, "/state")
    assert.are.same({ name = "embed_host", same = true, pool = false, upvalue_ok = true },
                    { name = s.name, same = s.same, pool = s.pool, upvalue_ok = s.upvalue_ok })
    assert.are.same(s.id, get(h.port, "/state").id)   -- opened once in that state
  end)

  it("and in every pool and executor thread's state: pooled routes and run_in_pool", function()
    for _, path in ipairs{ "/pool/state", "/run_in_pool/state" } do
      for _ = 1, 10 do
        local s = get(h.port, path)
        assert.are.same("embed_host", s.name)
        assert.is_true(s.pool)
        assert.is_true(s.upvalue_ok)
      end
    end
    -- open ran once per state: the loop's, at most the two pool threads' and the executor
    -- thread's (run_in_pool)
    local opens = get(h.port, "/opens").opens
    assert.is_true(opens >= 3 and opens <= 4, "opens " .. opens)
  end)

  it("its C state is shared by states running at once on several threads", function()
    assert.are.same(400, adds_at_once(h.port, "/pool/add?n=1", "/add?n=1", "/add?n=0"))
  end)
end)

describe("ml_host_preload_ffi", function()
  local h
  lazy_setup(function() h = embed_host("tests/apps/embed", "--pool-size 2") end)
  lazy_teardown(function() if h then h.finish() end end)

  it("require gives the embedder's struct of C functions through the FFI, loop and pool", function()
    for _, path in ipairs{ "/ffi/state", "/pool/ffi/state" } do
      for _ = 1, 5 do
        assert.are.same({ one = 1, scale = 10, name = "embed_host", same = true,
                          pool = path:find("pool") ~= nil }, get(h.port, path))
      end
    end
  end)

  it("calls the same C functions as the Lua C module, from states on several threads", function()
    -- the FFI's add and the Lua C module's share one C count
    assert.are.same(600, adds_at_once(h.port, "/pool/ffi/add?n=1", "/ffi/add?n=2", "/add?n=0"))
  end)
end)

describe("ml_host_preload with --reload", function()
  it("gives the module to the new code's states, loop and pool", function()
    local dir = t.tmpdir()
    sh("cp tests/apps/embed/*.lua " .. q(dir))
    local h = embed_host(dir, "--reload --pool-size 1")
    local first = get(h.port, "/state").id
    assert.is_true(get(h.port, "/pool/state").pool)
    local src = t.read_file(dir .. "/app.lua")
    t.write_file(dir .. "/app.lua", src:gsub("\nreturn app\n$", [[

app:get("/v2", function() return { name = require("hostinfo").name() } end)
app:get("/v2/ffi", function() return { one = require("hostffi").one() } end)
app:get("/v2/pool", { pool = true }, function()
  return { name = require("hostinfo").name(), id = require("hostinfo").state_id }
end)
return app
]]))
    wait_for("the new code", function()
      local res = t.request(h.port, "GET", "/v2")
      return res and res.status == 200
    end, 15)
    assert.are.same({ name = "embed_host" }, get(h.port, "/v2"))
    assert.are.same({ one = 1 }, get(h.port, "/v2/ffi"))   -- the new states declare it too
    assert.are.same("embed_host", get(h.port, "/ffi/state").name)
    assert.is_true(get(h.port, "/state").id > first)
    assert.are.same("embed_host", get(h.port, "/v2/pool").name)
    assert.are.same(0, (h.finish()))
  end)
end)

describe("ml_host_post and ml_host_emit", function()
  local h
  lazy_setup(function() h = embed_host("tests/apps/embed", "--log-level 0 --pool-size 1") end)
  lazy_teardown(function() if h then h.finish() end end)

  it("runs every callback posted from 4 threads, in each thread's order", function()
    assert.are.same("post 400000 ran 400000 ordered 1", h.cmd("post 4 100000", 60))
  end)

  it("calls the app's on_event handler as a coroutine, in order", function()
    assert.are.same("emits 0", h.cmd("emits slow 20"))   -- each handler sleeps
    local want = {}
    for i = 1, 20 do want[i] = { i = i } end
    wait_for("20 slow events", function() return #get(h.port, "/seen?name=slow") == 20 end)
    assert.are.same(want, get(h.port, "/seen?name=slow"))
  end)

  it("pushes a C thread's events to an SSE client", function()
    local c = assert(t.connect(h.port))
    c:send("GET /ticks?n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    local head = assert(c:read_head())
    assert.are.same(200, head.status)
    assert.are.same(": ready\n\n", assert(c:read_chunk()))   -- the stream waits for ticks
    assert.are.same("emit 0", h.cmd('emit tick {"n":1}'))
    assert.are.same('event: tick\ndata: {"n":1}\n\n', assert(c:read_chunk()))
    assert.are.same("emit 0", h.cmd("emit tick [1,2]"))
    assert.are.same("event: tick\ndata: [1,2]\n\n", assert(c:read_chunk()))
    assert.are.same("emit 0", h.cmd("emit tick"))         -- no JSON: the handler gets nil
    assert.are.same("event: tick\n\n", assert(c:read_chunk()))
    c:close()
  end)

  it("logs an event the app has no handler for at debug level", function()
    assert.are.same("emit 0", h.cmd("emit nobody 1"))
    h.wait_log("debug event nobody: the app has no on_event handler for it")
  end)

  it("logs a handler's error with its traceback and goes on", function()
    assert.are.same("emit 0", h.cmd("emit fail {}"))
    h.wait_log('error on_event%("fail"%) handler failed: [^\n]*app%.lua:%d+: the handler ' ..
               'failed on purpose\nstack traceback:')
    assert.are.same("emit 0", h.cmd("emit tick 5"))
    wait_for("the next event", function()
      local seen = get(h.port, "/seen?name=tick")
      return seen[#seen] == 5
    end)
  end)

  it("refuses a JSON text that is not one, and says why", function()
    assert.are.same("emit -1", h.cmd("emit tick {bad"))
    h.wait_log('warn  ml_host_emit%("tick"%): invalid json at byte 2')
    assert.are.same("emit -1", h.cmd("emit tick 1 2"))
  end)

  it("runs what was posted before a stop; refuses to post once stopping", function()
    local status, out = h.finish()
    h = nil
    assert.are.same(0, status)
    assert.matches("stop sent 1000 ran 1000 post %-1 emit %-1\n", out)
  end)
end)

describe("libmoonlet.so and examples/embed", function()
  local lib = build .. "/libmoonlet.so"
  local san = sh("ldd " .. q(lib)):find("libasan") and "-fsanitize=address,undefined" or ""

  it("has a soname and exports moonlet.h's API only", function()
    assert.matches("Library soname: %[libmoonlet%.so%.0%]", sh("readelf -d " .. q(lib)))
    local names = {}
    for name in sh("nm -D --defined-only " .. q(lib)):gmatch("%x+ %u ([%w_]+)\n") do
      names[#names + 1] = name
    end
    table.sort(names)
    -- every function moonlet.h declares (a line "type ml_name(" or "type *ml_name("), and
    -- nothing else
    local api, seen = {}, {}
    for name in t.read_file("core/moonlet.h"):gmatch("\n[%w_ ]-%*?(ml_[%w_]+)%(") do
      if not seen[name] then api[#api + 1], seen[name] = name, true end
    end
    table.sort(api)
    assert.is_true(#api >= 18, "moonlet.h's functions not found")
    assert.are.same(api, names)
  end)

  it("builds the example with pkg-config against the installed library, and serves", function()
    local prefix, out = t.tmpdir(), t.tmpdir()
    sh("make -s install BUILD=" .. q(build) .. " PREFIX=" .. q(prefix), { timeout = 120 })
    assert.are.same("libmoonlet.so.0.1.0\n", sh("readlink " .. q(prefix .. "/lib/libmoonlet.so.0")))
    assert.are.same("libmoonlet.so.0\n", sh("readlink " .. q(prefix .. "/lib/libmoonlet.so")))
    local env = { PKG_CONFIG_PATH = prefix .. "/lib/pkgconfig" }
    assert.are.same("-I" .. prefix .. "/include",
                    sh("pkg-config --cflags-only-I moonlet", { env = env }):match("^%S+"))
    assert.matches("^%-L" .. prefix:gsub("%p", "%%%0") .. "/lib %-lmoonlet %-lluajit%-5%.1 %-luv",
                   sh("pkg-config --libs moonlet", { env = env }))
    sh("make -s -C examples/embed BUILD=" .. q(out) .. " CC=" .. q("cc " .. san), { env = env })
    local bin = out .. "/counter"
    local ldd = sh("LD_LIBRARY_PATH=" .. q(prefix .. "/lib") .. " ldd " .. q(bin))
    assert.matches("libmoonlet%.so%.0 => " .. prefix:gsub("%p", "%%%0") .. "/lib/libmoonlet%.so%.0",
                   ldd)

    local srv = t.spawn({ "examples/embed/app", "0" },
                        { bin = bin, env = { LD_LIBRARY_PATH = prefix .. "/lib" } })
    srv.port = tonumber(wait_for("the example to listen", function()
      if srv:poll() then error("the example exited: " .. srv:stderr()) end
      return srv:stdout():match("listening on http://127%.0%.0%.1:(%d+)")
    end))
    assert.are.same({ value = 0 }, get(srv.port, "/count"))
    assert.are.same({ value = 5 }, assert(t.request(srv.port, "POST", "/count/add?n=5")):json())
    assert.are.same({ value = 7 }, assert(t.request(srv.port, "POST", "/count/add?n=2")):json())
    assert.are.same(422, assert(t.request(srv.port, "POST", "/count/add?n=x")).status)
    -- a pooled route: another thread's Lua state, the same C count
    assert.are.same({ was = 7 }, assert(t.request(srv.port, "POST", "/count/reset")):json())
    assert.are.same({ value = 3 }, assert(t.request(srv.port, "POST", "/count/add?n=3")):json())
    -- the program's thread ticks every second: a real EventSource client gets two
    local es = t.run({ "tests/support/eventsource_client.js",
                       "http://127.0.0.1:" .. srv.port .. "/events", "2" },
                     { bin = "node", env = { NODE_PATH = "build/node/node_modules" } })
    assert.are.same(0, es.status, es.stderr)
    local got = t.json_decode(es.stdout)
    assert.are.same(1, got.opens)
    assert.are.same({ "message", "message" }, { got.events[1].type, got.events[2].type })
    assert.are.same('{"value":3}', got.events[1].data)
    assert.are.same(tonumber(got.events[1].id) + 1, tonumber(got.events[2].id))
    assert.are.same(0, srv:stop())
    assert.matches("stopped at 3\n", srv:stdout())
  end)
end)
