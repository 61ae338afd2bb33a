-- Coroutines: concurrent sleeps, disconnects while waiting, graceful shutdown, embedding.
local t = require "moonlet.testing"

describe("coroutines", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "apps/hello", args = { "--log-level", "warn" } } end)
  lazy_teardown(function() srv:stop() end)

  it("runs 1,000 concurrent sleeps at once, not one after another", function()
    local r = t.concurrent(srv.port, 1000, "GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n", 30)
    assert.are.same(1000, r.ok)
    -- serialised they would take 1,000 s; concurrently about one
    assert.is_truthy(r.elapsed < 15, "1,000 one-second sleeps took " .. r.elapsed .. " s")
  end)

  it("cancels the sleep of a client that left and keeps serving", function()
    for _ = 1, 50 do
      local c = t.connect(srv.port)
      c:send("GET /sleep?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
      c:close()
    end
    t.sleep(0.6)   -- past the sleeps' end: their timers must be gone
    assert.are.same(200, assert(t.request(srv.port, "GET", "/hello")).status)
    assert.are.same({ slept = 0.01 }, assert(t.request(srv.port, "GET", "/sleep?s=0.01")):json())
  end)

  it("serves others while one request sleeps", function()
    local c = t.connect(srv.port)
    c:send("GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = t.now()
    assert.are.same(200, assert(t.request(srv.port, "GET", "/hello")).status)
    assert.is_truthy(t.now() - t0 < 0.9, "a sleeping request blocked another one")
    assert.are.same({ slept = 1 }, assert(c:read_response(5)):json())
    c:close()
  end)
end)

describe("graceful shutdown", function()
  it("finishes in-flight requests on SIGTERM, refuses new ones, exits 0", function()
    local srv = t.server{ app = "apps/hello" }
    local c = t.connect(srv.port)
    c:send("GET /sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    srv:signal("TERM")
    t.sleep(0.1)
    local refused = t.request(srv.port, "GET", "/hello", { timeout = 1 })
    assert.are.same(nil, refused, "a new connection was served while shutting down")
    local res = assert(c:read_response(5))
    assert.are.same(200, res.status)
    assert.are.same("close", res.headers["connection"])
    assert.are.same(0, srv:wait(5))
  end)

  it("exits on SIGINT when idle", function()
    local srv = t.server{ app = "apps/hello" }
    local c = t.connect(srv.port)   -- an idle keep-alive connection must not hold it up
    c:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert(c:read_response(5))
    srv:signal("INT")
    assert.are.same(0, srv:wait(5))
  end)

  it("answers a request sent on an idle keep-alive connection as the stop comes", function()
    -- a busy client sends its next request the moment it has a response: closing the idle
    -- connection at the stop would reset that request (wrk lost one per connection)
    local srv = t.server{ app = "apps/hello" }
    local c = t.connect(srv.port)
    c:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same(200, assert(c:read_response(5)).status)
    srv:signal("TERM")
    t.sleep(0.05)
    c:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(5))
    assert.are.same({ 200, "close" }, { res.status, res.headers["connection"] })
    c:close()
    assert.are.same(0, srv:wait(5))
  end)

  it("gives up on requests after --graceful-timeout, says how many and exits 1", function()
    local srv = t.server{ app = "apps/hello", args = { "--graceful-timeout", "0.3" } }
    local c = t.connect(srv.port)
    c:send("GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.1)
    local t0 = t.now()
    srv:signal("TERM")
    assert.are.same(1, srv:wait(10))
    assert.is_truthy(t.now() - t0 < 5, "graceful timeout not honoured")
    srv:wait_log("graceful timeout %(0%.3s%): closing 1 connection%(s%), dropping 1 request", 1)
    assert.is_truthy(c:is_closed(2))
  end)
end)

describe("embedding", function()
  it("serves from a C program through core/moonlet.h and stops from another thread", function()
    local bin = os.getenv("MOONLET_EMBED_BIN") or "build/tests/embed_example"
    local dir = t.tmpdir()
    -- embed_example serves until its stdin closes; feed it from a fifo we control
    os.execute("mkfifo " .. dir .. "/in")
    os.execute("(" .. bin .. " apps/hello <" .. dir .. "/in >" .. dir .. "/out 2>" .. dir ..
               "/err; echo $? >" .. dir .. "/status) &")
    local hold = io.open(dir .. "/in", "w")   -- opening unblocks the program's stdin
    local port
    for _ = 1, 500 do
      port = (t.read_file(dir .. "/out") or ""):match("listening on http://127%.0%.0%.1:(%d+)")
      if port then break end
      t.sleep(0.01)
    end
    assert.is_truthy(port, "embed_example did not start: " .. (t.read_file(dir .. "/err") or ""))
    assert.are.same('{"message":"hello"}', assert(t.request(tonumber(port), "GET", "/hello")).body)
    hold:close()   -- EOF: main calls ml_host_stop from its thread
    local status
    for _ = 1, 500 do
      status = t.read_file(dir .. "/status")
      if status and status ~= "" then break end
      t.sleep(0.01)
    end
    assert.are.same(0, tonumber(status))
    assert.matches("stopped", (t.read_file(dir .. "/out")))
  end)
end)
