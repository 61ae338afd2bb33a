-- The in-process test client (moonlet.testing's client): the cases the socket specs cover,
-- through the client, with no port and no binary started.
local t = require "moonlet.testing"
local moonlet = require "moonlet"

describe("test client", function()
  local c
  before_each(function() c = t.client("tests/apps/test_client") end)
  after_each(function() c:close() end)

  for _, p in ipairs({ "/co", "/pool" }) do
    describe(p, function()
      it("answers a GET with query fields, through the middleware", function()
        local res = c:get(p .. "/hello", { query = { name = "a b&c" } })
        assert.are.same(200, res.status)
        assert.are.same({ hello = "a b&c", pooled = p == "/pool" }, res:json())
        assert.are.same("ran", res.headers["x-middleware"])
        assert.are.same("application/json", res.headers["content-type"])
      end)

      it("sends json and form bodies", function()
        assert.are.same({ json = { a = { 1, 2 } }, ctype = "application/json" },
                        c:post(p .. "/echo", { json = { a = { 1, 2 } } }):json())
        assert.are.same({ x = "1", y = "z w" },
                        c:post(p .. "/form", { form = { x = 1, y = "z w" } }):json())
      end)

      it("keeps cookies like a browser and sends per-request ones", function()
        assert.are.same(204, c:get(p .. "/set", { query = { name = "sid", value = "42" } }).status)
        assert.are.same({ sid = "42" }, c.cookies)
        assert.are.same({ sid = "42", extra = "1" },
                        c:get(p .. "/cookies", { cookies = { extra = "1" } }):json())
        c:get(p .. "/set", { query = { name = "sid", value = "", max_age = 0 } })
        assert.are.same({}, c.cookies)
        assert.are.same({}, c:get(p .. "/cookies"):json())
      end)

      it("validates: 422 with the errors, 200 with defaults", function()
        assert.are.same({ id = 3, limit = 5 }, c:get(p .. "/items/3"):json())
        local res = c:get(p .. "/items/0", { query = { limit = 11 } })
        assert.are.same(422, res.status)
        assert.are.same(2, #res:json().detail)
      end)
    end)
  end

  it("overrides a dependency with app:override", function()
    assert.are.same({ db = "real db" }, c:get("/dep"):json())
    c.app:override(c.app.deps_module.db, function() return "fake db" end)
    assert.are.same({ db = "fake db" }, c:get("/dep"):json())
    c.app:override(c.app.deps_module.db, nil)
    assert.are.same({ db = "real db" }, c:get("/dep"):json())
  end)

  it("runs coroutine handlers that wait, 404s, 500s and HEAD", function()
    assert.are.same("slept", c:get("/sleep").body)
    assert.are.same(404, c:get("/nope").status)
    assert.are.same(500, c:get("/boom").status)
    local res = c:head("/co/hello")
    assert.are.same(200, res.status)
    assert.are.same("", res.body)
  end)

  it("collects a streamed body whole", function()
    local res = c:get("/stream")
    assert.are.same(200, res.status)
    assert.are.same("part 1\npart 2\npart 3\n", res.body)
  end)

  it("collects 300 streamed bodies in a row (no wake-up is lost)", function()
    -- the stream's last chunk is written from a timer's callback: the spec's wait must
    -- see it though nothing else will ever wake the loop (this hung before)
    for _ = 1, 300 do
      assert.are.same("part 1\npart 2\npart 3\n", c:get("/stream").body)
    end
  end)

  it("serves static files", function()
    local res = c:get("/static/hello.txt")
    assert.are.same(200, res.status)
    assert.are.same("hello static\n", res.body)
  end)

  it("serves a large static file and a range of it through the connection", function()
    local dir = t.tmpdir()
    local chunk = {}
    for i = 1, 40000 do chunk[i] = string.format("%05d\n", i % 100000) end   -- 240,000 bytes
    local big = table.concat(chunk):rep(3)                                  -- 720,000 bytes
    t.write_file(dir .. "/big.txt", big)
    local app = moonlet.app()
    app:static("/files", dir)
    local c2 = t.client(app)
    local res = c2:get("/files/big.txt")
    assert.are.same(200, res.status)
    assert.are.same(#big, tonumber(res.headers["content-length"]))
    assert.is_true(res.body == big, "the body differs from the file")
    res = c2:get("/files/big.txt", { headers = { Range = "bytes=300000-300011" } })
    assert.are.same(206, res.status)
    assert.are.same(big:sub(300001, 300012), res.body)
    assert.are.same(200, c2:get("/files/big.txt").status)   -- the connection goes on
    c2:close()
  end)

  it("opens no socket: its connections live in memory", function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "long readlink(const char *path, char *buf, unsigned long size);")
    local function sockets()
      local n = 0
      local buf = ffi.new("char[256]")
      for fd = 0, 1023 do
        local len = ffi.C.readlink("/proc/self/fd/" .. fd, buf, 256)
        if len > 0 and ffi.string(buf, len):match("^socket:") then n = n + 1 end
      end
      return n
    end
    local before = sockets()
    assert.are.same(200, c:get("/co/hello").status)
    local ws = assert(c:websocket("/ws"))
    ws:send("hi")
    assert.are.same("echo: hi", ws:receive())
    assert.are.same(before, sockets())
    ws:close()
  end)

  it("serves pipelined requests, a malformed one and a hang-up on a memory connection", function()
    local http = require "moonlet.testing.client"
    c:start()
    local conn = c._tc:connect()
    conn:send("GET /co/hello HTTP/1.1\r\nHost: x\r\n\r\nGET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    local buf, first, second, rest = ""
    repeat
      buf = buf .. assert(conn:recv(5))
      first, rest = http.parse_response(buf)
      if first then second = http.parse_response(rest) end
    until second
    assert.are.same(200, first.status)
    assert.are.same("slept", second.body)
    conn:send("BAD REQUEST LINE\r\n\r\n")
    local raw = ""
    while true do
      local data, why = conn:recv(5)
      if not data then
        assert.are.same("closed", why)
        break
      end
      raw = raw .. data
    end
    assert.are.same(400, http.parse_response(raw, { eof = true }).status)
    local gone = c._tc:connect()
    gone:send("GET /sleep HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same({ nil, "timeout" }, { gone:recv(0.001) })
    gone:close()   -- in flight: the server aborts the request
    assert.are.same(200, c:get("/co/hello").status)
  end)

  it("speaks WebSocket: text, binary, the server's close", function()
    local ws = assert(c:websocket("/ws"))
    ws:send("hi")
    assert.are.same({ "echo: hi", "text" }, { ws:receive() })
    ws:send_binary("\0\1\2")
    assert.are.same({ "\0\1\2", "binary" }, { ws:receive() })
    ws:send(string.rep("x", 70000))
    assert.are.same(70006, #ws:receive())
    ws:send("bye")
    assert.are.same({ nil, "closed", 4000 }, { ws:receive() })
  end)

  it("closes a WebSocket from the client side", function()
    local ws = assert(c:websocket("/ws"))
    assert.is_true(ws:close())
    local _, res = c:websocket("/co/hello")
    assert.are.same(200, res.status)
  end)

  it("runs startup hooks at start and shutdown hooks at close", function()
    local events = moonlet.shared.dict("test_client_events")
    events:delete("startup")
    events:delete("shutdown")
    local c2 = t.client("tests/apps/test_client")
    assert.is_nil(events:get("startup"))
    c2:start()
    assert.are.same("ran", events:get("startup"))
    assert.is_nil(events:get("shutdown"))
    c2:close()
    assert.are.same("ran", events:get("shutdown"))
  end)

  it("takes an app table built in the spec", function()
    local app = moonlet.app()
    app:get("/x", function(req) return { h = req.headers["x-a"] } end)
    local c2 = t.client(app)
    assert.are.same({ h = "1" }, c2:get("/x", { headers = { ["X-A"] = "1" } }):json())
    c2:close()
    local pooled = moonlet.app()
    pooled:get("/p", { pool = true }, function() return "p" end)
    assert.has_error(function() t.client(pooled) end,
      "bad argument #2 to 'client' (dir: pooled routes ({ pool = true }) need the app's directory)")
  end)

  it("runs run_in_pool on executor threads, pooled routes on pool threads", function()
    local c2 = t.client("tests/apps/pool", { pool_size = 1, executor_size = 1 })
    local rip = c2:get("/rip/state"):json()
    assert.are_not.same(rip.route, rip.call)   -- the loop's state, then the executor's
    local pooled = c2:get("/p/state"):json()
    assert.are.same(pooled.route, pooled.call)   -- inline on the pool thread
    assert.are_not.same(rip.call, pooled.route)  -- two threads, two states
    assert.are.same(rip.call, c2:get("/rip/state"):json().call)   -- one executor thread
    assert.are.same({ done = true }, c2:get("/rip/sleep?s=0.05"):json())
    c2:close()
  end)
end)
