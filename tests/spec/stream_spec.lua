-- moonlet.stream and moonlet.sse through the real binary (tests/apps/stream): framing on
-- raw bytes (chunked, HTTP/1.0, HEAD), curl, backpressure against a slow reader (the
-- producer held back, the server's RSS flat), a client that leaves, a producer that fails,
-- pooled routes, and Server-Sent Events read line by line and by a real EventSource client
-- (npm `eventsource`, run by node).
local t = require "moonlet.testing"

local function rss_kb(pid)
  return tonumber(t.read_file("/proc/" .. pid .. "/status"):match("VmRSS:%s*(%d+)"))
end

-- the largest socket buffers the kernel may give a connection: send + receive
local function kernel_buffers()
  local w = t.read_file("/proc/sys/net/ipv4/tcp_wmem"):match("(%d+)%s*$")
  local r = t.read_file("/proc/sys/net/ipv4/tcp_rmem"):match("(%d+)%s*$")
  return tonumber(w) + tonumber(r)
end

describe("moonlet.stream", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/stream" } end)
  lazy_teardown(function() srv:stop() end)

  local function state(key)
    return assert(t.request(srv.port, "GET", "/state?key=" .. key)):json().value
  end

  -- Reads until the connection closes (or the deadline): the bytes.
  local function read_until(c, pattern)
    local got = ""
    while not got:find(pattern) do
      local data = c:recv(5)
      if not data then break end
      got = got .. data
    end
    return got
  end

  it("sends each send() as one chunk, then the last chunk, on HTTP/1.1", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /count?n=3 HTTP/1.1\r\nHost: x\r\n\r\n"))
    local head = assert(c:read_head(5))
    assert.are.same(200, head.status)
    assert.are.same("chunked", head.headers["transfer-encoding"])
    assert.is_nil(head.headers["content-length"])
    assert.are.same("text/plain", head.headers["content-type"])
    assert.are.same("yes", head.headers["x-stream"])
    assert.are.same("seen", head.headers["x-mw"])    -- the middleware saw it
    local body = read_until(c, "0\r\n\r\n$")
    assert.are.same("7\r\nline 1\n\r\n7\r\nline 2\n\r\n7\r\nline 3\n\r\n0\r\n\r\n", body)
    -- the connection is kept alive for the next request
    assert(c:send("GET /state?key=none HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same(200, assert(c:read_response(5)).status)
    c:close()
  end)

  it("ends the body by closing the connection on HTTP/1.0", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /count?n=2 HTTP/1.0\r\n\r\n"))
    local raw = assert(c:read_all(5))
    local head, body = raw:match("^(.-\r\n)\r\n(.*)$")
    assert.matches("\r\nConnection: close\r\n", head)
    assert.is_nil(head:lower():find("transfer-encoding", 1, true))
    assert.is_nil(head:lower():find("content-length", 1, true))
    assert.are.same("line 1\nline 2\n", body)
  end)

  it("answers HEAD with the head alone and does not run the producer", function()
    assert(t.request(srv.port, "GET", "/state?key=none"))
    local c = assert(t.connect(srv.port))
    assert(c:send("HEAD /ticks HTTP/1.1\r\nHost: x\r\n\r\nGET /state?key=ticks HTTP/1.1\r\n"
                  .. "Host: x\r\n\r\n"))
    local res = assert(c:read_response{ timeout = 5, head = true })
    assert.are.same(200, res.status)
    assert.are.same("chunked", res.headers["transfer-encoding"])
    assert.are.same("", res.body)
    -- pipelined: the next response follows; the producer never sent tick 1
    assert.are.same({ value = 0 }, assert(c:read_response(5)):json())
    c:close()
  end)

  it("keeps pipelined requests waiting until the stream has ended", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /count?n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  .. "GET /count?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same("line 1\nline 2\n", assert(c:read_response(5)).body)
    assert.are.same("line 1\n", assert(c:read_response(5)).body)
    c:close()
  end)

  it("is read by curl -N as it comes", function()
    local out = t.run({ "-sN", "http://127.0.0.1:" .. srv.port .. "/count?n=4" }, { bin = "curl" })
    assert.are.same(0, out.status)
    assert.are.same("line 1\nline 2\nline 3\nline 4\n", out.stdout)
  end)

  it("takes status and headers from moonlet.response, and gzip leaves it alone", function()
    local res = assert(t.request(srv.port, "GET", "/created",
                                 { headers = { ["accept-encoding"] = "gzip" } }))
    assert.are.same(201, res.status)
    assert.are.same("1", res.headers["x-custom"])
    assert.are.same("seen", res.headers["x-mw"])
    assert.is_nil(res.headers["content-encoding"])
    assert.are.same("made", res.body)
  end)

  it("holds a 100 MB producer back to a slow reader; the server's RSS stays flat", function()
    local before = rss_kb(srv.pid)
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /big?mb=100 HTTP/1.1\r\nHost: x\r\n\r\n"))
    local got, slack = 0, 64 * 1024 + kernel_buffers() + 65536
    for step = 1, 4 do
      while got < step * 1024 * 1024 do got = got + #assert(c:recv(5)) end
      t.sleep(0.2)   -- the reader pauses: the producer must wait for it
      local produced = state("big")
      assert.is_true(produced <= got + slack,
                     ("produced %d bytes while %d were read"):format(produced, got))
    end
    assert.is_true(state("big") < 100 * 1024 * 1024)
    c:close()
    -- a fast reader then gets all of it
    local out = t.run({ "-s", "-o", "/dev/null", "-w", "%{size_download}",
                        "http://127.0.0.1:" .. srv.port .. "/big?mb=100" }, { bin = "curl" })
    assert.are.same(tostring(100 * 1024 * 1024), out.stdout)
    local growth = rss_kb(srv.pid) - before
    assert.is_true(growth < 8 * 1024, "server RSS grew by " .. growth .. " kB")
  end)

  it("stops the producer when the client leaves; req:defer hears why", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /ticks HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert(c:read_head(5))
    assert.matches("tick 3", read_until(c, "tick 3"))
    c:close()
    local why
    for _ = 1, 100 do
      why = state("ticks_end")
      if why then break end
      t.sleep(0.05)
    end
    assert.are.same("client disconnected", why)
    local n = state("ticks")
    t.sleep(0.2)
    assert.are.same(n, state("ticks"))   -- the producer is gone
    assert.are.same(200, assert(t.request(srv.port, "GET", "/count?n=1")).status)
  end)

  it("cuts the response when the producer fails, and logs it with the route", function()
    local mark = srv:mark()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /fail HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same(200, assert(c:read_head(5)).status)
    assert.are.same("partial\n", assert(c:read_chunk(5)))
    local last, err = c:read_chunk(5)   -- no last chunk: the connection closes
    assert.is_nil(last)
    assert.matches("closed", err)
    c:close()
    assert.truthy(srv:wait_log("GET /fail: stream producer failed: .-producer broke", 5, mark))
    -- curl sees an incomplete transfer
    local out = t.run({ "-s", "http://127.0.0.1:" .. srv.port .. "/fail" }, { bin = "curl" })
    assert.are.same(18, out.status)   -- CURLE_PARTIAL_FILE
  end)

  it("answers 500 before any byte when the stream's headers are bad", function()
    local mark = srv:mark()
    local res = assert(t.request(srv.port, "GET", "/bad-header"))
    assert.are.same(500, res.status)
    assert.are.same({ detail = "Internal Server Error" }, res:json())
    assert.truthy(srv:wait_log("GET /bad%-header: response header 'x%-bad' has a value", 5, mark))
  end)

  it("answers 500 with a clear log line when a pooled route returns a stream", function()
    local mark = srv:mark()
    local res = assert(t.request(srv.port, "GET", "/pooled"))
    assert.are.same(500, res.status)
    assert.truthy(srv:wait_log("GET /pooled: a { pool = true } route returned moonlet.stream", 5,
                               mark))
  end)

  it("lets the loop run every MiB when the client keeps up", function()
    local out = t.run({ "-s", "http://127.0.0.1:" .. srv.port .. "/fair" }, { bin = "curl" })
    local turns = tonumber(out.stdout:match("turns (%d+)\n$"))
    assert.is_true(turns >= 7, "the other task ran " .. tostring(turns) .. " times")
  end)

  it("refuses send from another task", function()
    local res = assert(t.request(srv.port, "GET", "/spawned-send"))
    assert.are.same("ok", res.body)
    assert.matches("send: call it from the stream's producer", state("spawned"))
  end)

  it("raises on bad arguments, naming the option", function()
    local res = assert(t.request(srv.port, "GET", "/bad-args"))
    local msgs = res:json()
    local want = {
      "bad argument #1 to 'stream' %(expected a producer function%)",
      "bad argument #2 to 'stream' %(unknown option 'statuss'; accepted: content_type, "
        .. "headers, high_water, status%)",
      "bad argument #2 to 'stream' %(status must be an integer from 200 to 599%)",
      "bad argument #2 to 'stream' %(content_type must be a string",
      "bad argument #2 to 'stream' %(high_water must be a number of bytes >= 0%)",
      "bad argument #2 to 'sse' %(keepalive must be a number of seconds >= 0",
      "bad argument #2 to 'sse' %(unknown option 'content_type'",
    }
    assert.are.same(#want, #msgs)
    for i, pattern in ipairs(want) do assert.matches(pattern, msgs[i]) end
    assert.matches("app.lua:%d+:", msgs[1])   -- the caller's line
  end)
end)

describe("moonlet.stream with a short --header-timeout", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/stream", args = { "--header-timeout", "0.5" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("may pause longer than the timeout once its output has drained", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /burst-idle HTTP/1.1\r\nHost: x\r\n\r\n"))
    t.sleep(0.3)   -- not reading yet: the server's write waits in libuv
    local tail, total = "", 0
    while not tail:find("end\r\n0\r\n\r\n$") do
      local data, err = c:recv(5)
      assert.is_truthy(data, err)
      total = total + #data
      tail = (tail .. data):sub(-16)
    end
    assert.is_true(total > 8 * 1024 * 1024)
    c:close()
  end)
end)

describe("moonlet.sse", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/stream" } end)
  lazy_teardown(function() srv:stop() end)

  it("writes events in the text/event-stream format, with keepalive comments", function()
    local res = assert(t.request(srv.port, "GET", "/events?wait=0.7",
                                 { headers = { ["last-event-id"] = "41" }, timeout = 5 }))
    assert.are.same(200, res.status)
    assert.are.same("text/event-stream", res.headers["content-type"])
    assert.are.same("no-cache", res.headers["cache-control"])
    assert.are.same("no", res.headers["x-accel-buffering"])
    assert.are.same("1", res.headers["x-sse"])
    assert.are.same("chunked", res.headers["transfer-encoding"])
    local body, pings = res.body:gsub(": ping\n\n", "")
    assert.is_true(pings >= 1, "no keepalive comment in " .. res.body)
    assert.are.same(table.concat{
      'data: {"list":["a",1]}\n\n',
      "event: note\nid: 7\ndata: first line\ndata: second line\ndata: third\n\n",
      "retry: 1500\ndata: 42\n\n",
      ": just a comment\n\n",
      "data: plain\n\n",
      "data: last-event-id: 41\n\n",
      "event: end\ndata: bye\n\n",
    }, body)
  end)

  it("sends one event per chunk, the pings between them", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /events?wait=0.5 HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert(c:read_head(5))
    local chunks = {}
    repeat
      local chunk = assert(c:read_chunk(5))
      chunks[#chunks + 1] = chunk
    until chunk == ""
    c:close()
    assert.are.same('data: {"list":["a",1]}\n\n', chunks[1])
    assert.are.same(": ping\n\n", chunks[7])
    assert.are.same("event: end\ndata: bye\n\n", chunks[#chunks - 1])
  end)

  for kind, why in pairs{ id = "id must be a string without CR, LF or NUL",
                          retry = "retry must be an integer number of milliseconds",
                          none = "unknown field 'nope'" } do
    it("cuts the stream at a bad event (" .. kind .. ")", function()
      local mark = srv:mark()
      local c = assert(t.connect(srv.port))
      assert(c:send("GET /bad-event?kind=" .. kind .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert(c:read_head(5))
      assert.are.same("data: ok\n\n", assert(c:read_chunk(5)))
      assert.is_nil((c:read_chunk(5)))
      c:close()
      assert.truthy(srv:wait_log("GET /bad%-event: stream producer failed: .-"
                                 .. why:gsub("%p", "%%%0"), 5, mark))
    end)
  end

  it("is read by a real EventSource client, which resumes with Last-Event-ID", function()
    local out = t.run({ "tests/support/eventsource_client.js",
                        "http://127.0.0.1:" .. srv.port .. "/feed", "3" },
                      { bin = "node", env = { NODE_PATH = "build/node/node_modules" } })
    assert.are.same(0, out.status, out.stderr)
    assert.are.same({
      opens = 2,   -- the stream ended after id 2; the client came back for the rest
      events = {
        { type = "message", data = '{"n":1}', id = "1" },
        { type = "update", data = "two\nlines", id = "2" },
        { type = "message", data = "resumed after 2", id = "3" },
      },
    }, t.json_decode(out.stdout))
  end)
end)
