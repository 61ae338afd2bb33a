-- Self-test of moonlet.testing, needing no moonlet binary: the DSL and assertions,
-- the HTTP parsers on canned bytes, the raw client against an in-process listener,
-- and the process helpers with /bin/sh standing in for the binary. Under 1 s.

local testing = require "moonlet.testing"

local function crlf(s) return (s:gsub("\n", "\r\n")) end

describe("dsl", function()
  local log = {}
  before_all(function() log[#log + 1] = "before_all" end)
  before_each(function() log[#log + 1] = "before_each" end)
  after_each(function() log[#log + 1] = "after_each" end)

  it("runs before_all once, then before_each", function()
    eq(log, { "before_all", "before_each" })
  end)

  it("runs after_each after every test", function()
    eq(log, { "before_all", "before_each", "after_each", "before_each" })
  end)

  describe("nested", function()
    before_each(function() log[#log + 1] = "inner" end)
    it("runs outer before_each hooks first", function()
      eq({ log[#log - 1], log[#log] }, { "before_each", "inner" })
    end)
  end)

  it("refuses to declare tests while tests run", function()
    raises(function() it("late", function() end) end, "not inside a test")
    raises(function() describe("late", function() end) end, "not inside a test")
  end)

  it("gives each spec file its own environment", function()
    spec_local_global = 1              -- luacheck: ignore (lands in the spec env)
    eq(rawget(_G, "spec_local_global"), nil)
  end)
end)

describe("assertions", function()
  it("eq compares tables deeply", function()
    eq({ 1, { a = "x", b = { true } } }, { 1, { a = "x", b = { true } } })
    eq(0 / 0, 0 / 0)
    local a, b = { n = 1 }, { n = 1 }
    a.self, b.self = a, b
    eq(a, b)
  end)

  it("eq reports both values and where they differ", function()
    local err = raises(function() eq({ a = { 1, 2 } }, { a = { 1, 3 } }, "lists") end)
    match(err, "lists: expected 3, got 2 %(at %.a%[2%]%)")
    match(err, "expected: {a = {1, 3}}")
    match(err, "actual:   {a = {1, 2}}")
    match(raises(function() eq("x\n", "y") end), 'expected "y", got "x\\n"')
    match(raises(function() eq({}, { k = false }) end), "at %.k")
    match(raises(function() eq(string.rep("a", 100) .. "b", string.rep("a", 100) .. "c") end),
          "first difference at byte 101")
  end)

  it("eq points at the caller's line", function()
    match(raises(function() eq(1, 2) end), "selftest_spec%.lua:%d+: expected 2, got 1")
  end)

  it("ok, match, near", function()
    eq(ok(42), 42)
    match(raises(function() ok(nil, "thing") end), "thing: expected a true value, got nil")
    eq(match("id=17", "id=(%d+)"), "17")
    match(raises(function() match("hello", "^bye") end), '"hello" does not match "%^bye"')
    match(raises(function() match(nil, "x") end), "got nil")
    near(0.1 + 0.2, 0.3, 1e-12)
    match(raises(function() near(1.5, 1, 0.25) end), "expected 1 within 0.25, got 1.5")
    raises(function() near(0 / 0, 1, 1) end)
  end)

  it("raises checks that and how a function fails", function()
    match(raises(function() error("boom 7") end, "boom %d"), "boom 7")
    match(raises(function() raises(function() end) end), "expected an error")
    match(raises(function() raises(function() error("abc") end, "xyz") end), "does not match")
    local e = raises(function() error({ code = 5 }) end, "code = 5")
    eq(e, { code = 5 })
  end)

  it("inspect is deterministic", function()
    eq(testing.inspect({ b = 1, a = { "x", 2 }, [3] = true, [1] = 0 }),
       '{0, [3] = true, a = {"x", 2}, b = 1}')
    eq(testing.inspect(0.1 + 0.2), "0.30000000000000004")
  end)
end)

describe("parse_response", function()
  local cl = crlf("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\nX-A: 1\nx-a: 2\n\nhello")
  local chunked = crlf("HTTP/1.1 201 Created\nTransfer-Encoding: chunked\n\n")
                  .. "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"

  it("reads a Content-Length body", function()
    local res, rest = testing.parse_response(cl)
    eq(rest, "")
    eq(res.status, 200)
    eq(res.reason, "OK")
    eq(res.version, "HTTP/1.1")
    eq(res.body, "hello")
    eq(res.headers["content-type"], "text/plain")
    eq(res.headers["x-a"], "1, 2")
    eq(res:header_values("X-A"), { "1", "2" })
    eq(res.header_list[1], { name = "content-type", value = "text/plain" })
    eq(res.raw, cl)
  end)

  it("reads a chunked body with extensions and trailers", function()
    local res, rest = testing.parse_response(chunked)
    eq(rest, "")
    eq(res.status, 201)
    eq(res.body, "hello world")
    eq(res.chunks, { "hello", " world" })
    eq(res.trailers, { ["x-trailer"] = "t" })
  end)

  it("splits pipelined responses and keeps the rest", function()
    local res, rest = testing.parse_response(cl .. chunked .. "HTTP/1.1 2")
    eq(res.body, "hello")
    local res2, rest2 = testing.parse_response(rest)
    eq(res2.body, "hello world")
    eq(rest2, "HTTP/1.1 2")
    eq({ testing.parse_response(rest2) }, { nil, "incomplete", #rest2 + 1 })
  end)

  it("says incomplete for every proper prefix", function()
    local buf = cl .. chunked
    for i = 0, #cl - 1 do
      local res, err = testing.parse_response(buf:sub(1, i))
      if res or err ~= "incomplete" then error("prefix of " .. i .. " bytes: " .. tostring(err)) end
    end
    local _, rest = testing.parse_response(buf)
    for i = 0, #chunked - 1 do
      local res, err = testing.parse_response(rest:sub(1, i))
      if res or err ~= "incomplete" then error("chunked prefix of " .. i .. " bytes: " .. tostring(err)) end
    end
  end)

  it("knows which responses have no body", function()
    local res, rest = testing.parse_response(cl .. "next", { head = true })
    eq(res.body, "")
    eq(rest, "hello" .. "next")
    for _, st in ipairs({ "100 Continue", "204 No Content", "304 Not Modified" }) do
      res, rest = testing.parse_response("HTTP/1.1 " .. st .. "\r\nContent-Length: 3\r\n\r\nabc")
      eq(res.body, "", st)
      eq(rest, "abc", st)
    end
  end)

  it("reads a body delimited by close only at eof", function()
    local buf = crlf("HTTP/1.0 200 OK\nServer: x\n\n") .. "all of it"
    eq(select(2, testing.parse_response(buf)), "incomplete")
    local res = testing.parse_response(buf, { eof = true })
    eq(res.body, "all of it")
    eq(res.version, "HTTP/1.0")
  end)

  it("rejects malformed responses", function()
    match(select(2, testing.parse_response("garbage\r\n\r\n")), "^invalid response")
    match(select(2, testing.parse_response("HTX")), "^invalid response")
    match(select(2, testing.parse_response("HTTP/1.1 20 OK\r\n\r\n")), "status line")
    match(select(2, testing.parse_response("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n")), "header line")
    match(select(2, testing.parse_response("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n")),
          "content%-length")
    match(select(2, testing.parse_response(crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
                                             .. "zz\r\n")), "chunk size")
    match(select(2, testing.parse_response(crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
                                             .. "2\r\nabc\r\n")), "CRLF")
  end)

  it("parses requests too (for fake upstreams)", function()
    local req, rest = testing.parse_request(crlf("POST /a?b=1 HTTP/1.1\nHost: x\nContent-Length: 3\n\n")
                                            .. "abcGET")
    eq({ req.method, req.target, req.path, req.body, rest }, { "POST", "/a?b=1", "/a", "abc", "GET" })
    req = testing.parse_request(crlf("PUT / HTTP/1.1\nTransfer-Encoding: chunked\n\n")
                                .. "3\r\nabc\r\n0\r\n\r\n")
    eq(req.body, "abc")
  end)
end)

describe("json", function()
  local decode = testing.json_decode_lua

  it("decodes with the built-in decoder", function()
    eq(decode(' {"a": [1, 2.5, -3e2, true, false], "b": {"c": "d"}, "e": []} '),
       { a = { 1, 2.5, -300, true, false }, b = { c = "d" }, e = {} })
    eq(decode('"\\u00e9\\u4e2d\\ud83d\\ude00\\n\\"\\/"'), "é中😀\n\"/")
    eq(decode("[1, null, 3]")[2], testing.null)
    eq(#decode("[1, null, 3]"), 3)
  end)

  it("rejects invalid JSON", function()
    raises(function() decode("{") end, "invalid JSON")
    raises(function() decode("[1,]") end, "invalid JSON")
    raises(function() decode("1 2") end, "trailing")
    raises(function() decode('"abc') end, "unterminated")
  end)

  it("res:json() decodes the body or says why not", function()
    local res = testing.parse_response(crlf("HTTP/1.1 200 OK\nContent-Length: 17\n\n") .. '{"items":[1,"2"]}')
    eq(res:json(), { items = { 1, "2" } })
    res.body = "<html>"
    match(raises(function() res:json() end), "not JSON.*<html>")
  end)
end)

describe("client", function()
  local listener, client, server

  before_each(function()
    listener = assert(testing.listen(0))
    client = assert(testing.connect(listener.port))
    server = assert(listener:accept(1))
  end)

  after_each(function()
    client:close()
    server:close()
    listener:close()
  end)

  it("sends a request and reads pipelined responses split anywhere", function()
    ok(client:send("GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"))
    eq(server:read_request(1).path, "/one")
    eq(server:read_request(1).path, "/two")
    local bytes = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
                  .. "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
    for i = 1, #bytes, 7 do ok(server:send(bytes:sub(i, i + 6))) end
    local r1 = assert(client:read_response(1))
    local r2 = assert(client:read_response(1))
    eq({ r1.status, r1.body, r2.status, r2.reason, r2.body }, { 200, "one", 404, "Not Found", "two" })
    eq({ client:read_response(0.02) }, { nil, "timeout" })
  end)

  it("reads a body that ends with the connection", function()
    server:send("HTTP/1.1 200 OK\r\n\r\nuntil")
    server:send(" close")
    server:close()
    eq(client:read_response(1).body, "until close")
    eq({ client:read_response(1) }, { nil, "closed" })
  end)

  it("reports a response cut short", function()
    server:send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    server:close()
    match(select(2, client:read_response(1)), "^closed after")
  end)

  it("honours HEAD", function()
    server:send("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    eq(client:read_response(1, { head = true }).body, "")
    eq(client:read_response({ timeout = 1 }).status, 204)
  end)

  it("streams chunks with read_head / read_chunk", function()
    server:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    eq(client:read_head(1).status, 200)
    eq(client:read_chunk(1), "first")
    eq({ client:read_chunk(0.02) }, { nil, "timeout" })
    server:send("6\r\nsecond\r\n0\r\n\r\n")
    eq(client:read_chunk(1), "second")
    eq(client:read_chunk(1), "")
  end)

  it("recv, read_all and is_closed", function()
    eq({ client:recv(0.02) }, { nil, "timeout" })
    server:send("abc")
    eq(client:recv(1), "abc")
    eq(client:is_closed(0.02), false)
    server:send("def")
    server:close()
    eq(client:is_closed(1), true)
    eq(client:read_all(1), "def")             -- kept while waiting for the close
    eq({ client:recv(1) }, { nil, "closed" })
  end)

  it("sees a reset as closed", function()
    client:reset()
    eq(server:is_closed(1), true)
    eq({ client:send("x") }, { nil, "closed" })
  end)
end)

describe("client without a server", function()
  local port
  before_all(function()
    local l = assert(testing.listen(0))
    port = l.port
    l:close()                                  -- now nothing listens there
  end)

  it("connect is refused", function()
    eq({ testing.connect(port) }, { nil, "connection refused" })
    eq({ testing.request(port, "GET", "/") }, { nil, "connection refused" })
  end)

  it("concurrent counts errors and timeouts", function()
    local r = testing.concurrent(port, 5, nil, 1)
    eq({ r.ok, r.errors, r.error_kinds }, { 0, 5, { ["connection refused"] = 5 } })
    local l = assert(testing.listen(0))       -- accepts in the kernel, never answers
    r = testing.concurrent(l.port, 3, "GET / HTTP/1.1\r\n\r\n", 0.05)
    l:close()
    eq({ r.ok, r.errors, r.timeouts, r.statuses }, { 0, 3, 3, {} })
    ok(r.elapsed >= 0.05 and r.elapsed < 1, r.elapsed)
  end)

  it("builds requests with Host, Content-Length and Connection: close", function()
    eq(testing.build_request(80, "POST", "/x", { body = "hi", headers = { ["X-Y"] = { "1", "2" } } }),
       "POST /x HTTP/1.1\r\nX-Y: 1\r\nX-Y: 2\r\nHost: 127.0.0.1:80\r\nContent-Length: 2\r\n"
       .. "Connection: close\r\n\r\nhi")
  end)
end)

describe("processes (with /bin/sh as the binary)", function()
  local dir, fake

  before_all(function()
    dir = testing.tmpdir()
    fake = dir .. "/fake-server"
    testing.write_file(fake, table.concat({
      "#!/bin/sh",
      'echo "args: $*" >&2',
      'if [ "$2" = broken ]; then echo "error: app broken not found" >&2; exit 2; fi',
      'echo "listening on http://127.0.0.1:4242"',
      'if [ "$2" = sleeper ]; then exec sleep 30; fi',
      "trap 'echo got TERM >&2; exit 0' TERM",
      "while :; do sleep 0.01; done",
    }, "\n") .. "\n")
    os.execute("chmod +x " .. testing.shell_quote(fake))
  end)

  it("run returns status, stdout and stderr", function()
    local r = testing.run({ "-c", 'echo out; echo "err $FOO" >&2; exit 3' },
                          { bin = "/bin/sh", env = { FOO = "it's" } })
    eq(r, { status = 3, stdout = "out\n", stderr = "err it's\n" })
  end)

  it("server waits for 'listening on' and stops with TERM", function()
    local srv = testing.server{ bin = fake, app = "apps/x", args = { "--log-level", "info" } }
    eq({ srv.host, srv.port, srv.url }, { "127.0.0.1", 4242, "http://127.0.0.1:4242" })
    match(srv:wait_log("^args:"), "serve apps/x %-%-host 127%.0%.0%.1 %-%-port 0 %-%-log%-level info")
    eq(srv:wait(0.02), nil)
    eq(srv:stop(), 0)
    eq(srv:stop(), 0)
    match(srv:stderr(), "got TERM")
    raises(function() srv:wait_log("never", 0.05) end, "exited")
  end)

  it("INT reaches the binary (sh would ignore it in background jobs)", function()
    local srv = testing.server{ bin = fake, app = "sleeper" }
    ok(srv:signal("INT"))
    eq(srv:wait(2), 130)
    eq({ srv:signal("TERM") }, { nil, "exited" })
    srv:stop()
  end)

  it("server raises with stderr when the start fails; start does not", function()
    raises(function() testing.server{ bin = fake, app = "broken" } end, "app broken not found")
    local p = testing.start{ bin = fake, app = "broken" }
    eq(p.listening, false)
    eq(p:wait(2), 2)
    match(p:stderr(), "app broken not found")
    p:stop()
  end)

  it("wait_log times out with the log tail", function()
    local srv = testing.server{ bin = fake, app = "x" }
    local mark = srv:mark()
    raises(function() srv:wait_log("nothing like this", 0.03, mark) end, "timeout.*args:")
    srv:stop()
  end)
end)

describe("utils", function()
  it("now and sleep", function()
    local t0 = testing.now()
    testing.sleep(0.02)
    local dt = testing.now() - t0
    ok(dt >= 0.019 and dt < 0.5, dt)
  end)

  it("write_file, read_file, tmpdir", function()
    local d = testing.tmpdir()
    local p = testing.write_file(d .. "/a/b/c.txt", "x\0y")
    eq(testing.read_file(p), "x\0y")
    local data, err = testing.read_file(d .. "/missing")
    eq(data, nil)
    match(err, "No such file")
  end)
end)

describe("after_all", function()
  local ran = false
  describe("inner", function()
    after_all(function() ran = true end)
    it("runs", function() end)
  end)
  it("ran after the inner block", function() ok(ran) end)
end)
