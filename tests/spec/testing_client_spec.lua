-- moonlet.testing.client, needing no moonlet binary: the HTTP parsers on canned bytes,
-- res:json(), the raw client against an in-process listener, monotonic time. Under 1 s.
local client = require "moonlet.testing.client"
local testing = require "moonlet.testing"

local function crlf(s) return (s:gsub("\n", "\r\n")) end

describe("parse_response", function()
  local cl = crlf("HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 5\nX-A: 1\nx-a: 2\n\nhello")
  local chunked = crlf("HTTP/1.1 201 Created\nTransfer-Encoding: chunked\n\n")
                  .. "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"

  it("reads a Content-Length body", function()
    local res, rest = client.parse_response(cl)
    assert.are.same("", rest)
    assert.are.same(200, res.status)
    assert.are.same("OK", res.reason)
    assert.are.same("HTTP/1.1", res.version)
    assert.are.same("hello", res.body)
    assert.are.same("text/plain", res.headers["content-type"])
    assert.are.same("1, 2", res.headers["x-a"])
    assert.are.same({ "1", "2" }, res:header_values("X-A"))
    assert.are.same({ name = "content-type", value = "text/plain" }, res.header_list[1])
    assert.are.same(cl, res.raw)
  end)

  it("reads a chunked body with extensions and trailers", function()
    local res, rest = client.parse_response(chunked)
    assert.are.same("", rest)
    assert.are.same(201, res.status)
    assert.are.same("hello world", res.body)
    assert.are.same({ "hello", " world" }, res.chunks)
    assert.are.same({ ["x-trailer"] = "t" }, res.trailers)
  end)

  it("splits pipelined responses and keeps the rest", function()
    local res, rest = client.parse_response(cl .. chunked .. "HTTP/1.1 2")
    assert.are.same("hello", res.body)
    local res2, rest2 = client.parse_response(rest)
    assert.are.same("hello world", res2.body)
    assert.are.same("HTTP/1.1 2", rest2)
    assert.are.same({ nil, "incomplete", #rest2 + 1 }, { client.parse_response(rest2) })
  end)

  it("says incomplete for every proper prefix", function()
    local buf = cl .. chunked
    for i = 0, #cl - 1 do
      local res, err = client.parse_response(buf:sub(1, i))
      if res or err ~= "incomplete" then error("prefix of " .. i .. " bytes: " .. tostring(err)) end
    end
    local _, rest = client.parse_response(buf)
    for i = 0, #chunked - 1 do
      local res, err = client.parse_response(rest:sub(1, i))
      if res or err ~= "incomplete" then error("chunked prefix of " .. i .. " bytes: " .. tostring(err)) end
    end
  end)

  it("knows which responses have no body", function()
    local res, rest = client.parse_response(cl .. "next", { head = true })
    assert.are.same("", res.body)
    assert.are.same("hello" .. "next", rest)
    for _, st in ipairs({ "100 Continue", "204 No Content", "304 Not Modified" }) do
      res, rest = client.parse_response("HTTP/1.1 " .. st .. "\r\nContent-Length: 3\r\n\r\nabc")
      assert.are.same("", res.body, st)
      assert.are.same("abc", rest, st)
    end
  end)

  it("reads a body delimited by close only at eof", function()
    local buf = crlf("HTTP/1.0 200 OK\nServer: x\n\n") .. "all of it"
    assert.are.same("incomplete", select(2, client.parse_response(buf)))
    local res = client.parse_response(buf, { eof = true })
    assert.are.same("all of it", res.body)
    assert.are.same("HTTP/1.0", res.version)
  end)

  it("rejects malformed responses", function()
    assert.matches("^invalid response", select(2, client.parse_response("garbage\r\n\r\n")))
    assert.matches("^invalid response", select(2, client.parse_response("HTX")))
    assert.matches("status line", select(2, client.parse_response("HTTP/1.1 20 OK\r\n\r\n")))
    assert.matches("header line",
                   select(2, client.parse_response("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n")))
    assert.matches("content%-length",
                   select(2, client.parse_response("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n")))
    local chunked_head = crlf("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n")
    assert.matches("chunk size", select(2, client.parse_response(chunked_head .. "zz\r\n")))
    assert.matches("CRLF", select(2, client.parse_response(chunked_head .. "2\r\nabc\r\n")))
  end)

  it("parses requests too (for fake upstreams)", function()
    local req, rest = client.parse_request(crlf("POST /a?b=1 HTTP/1.1\nHost: x\nContent-Length: 3\n\n")
                                           .. "abcGET")
    assert.are.same({ "POST", "/a?b=1", "/a", "abc", "GET" },
                    { req.method, req.target, req.path, req.body, rest })
    req = client.parse_request(crlf("PUT / HTTP/1.1\nTransfer-Encoding: chunked\n\n")
                               .. "3\r\nabc\r\n0\r\n\r\n")
    assert.are.same("abc", req.body)
  end)
end)

describe("res:json()", function()
  it("decodes the body with cjson, JSON null as testing.null", function()
    local res = client.parse_response(crlf("HTTP/1.1 200 OK\nContent-Length: 26\n\n")
                                      .. '{"items":[1,"2"],"n":null}')
    assert.are.same({ items = { 1, "2" }, n = testing.null }, res:json())
    assert.are.equal(require("cjson").null, testing.null)
  end)

  it("says the body is not JSON, and shows it", function()
    local res = client.parse_response(crlf("HTTP/1.1 200 OK\nContent-Length: 6\n\n") .. "<html>")
    assert.error_matches(function() res:json() end, 'not JSON.*"<html>"')
  end)
end)

describe("connection", function()
  local listener, conn, server

  before_each(function()
    listener = assert(client.listen(0))
    conn = assert(client.connect(listener.port))
    server = assert(listener:accept(1))
  end)

  after_each(function()
    conn:close()
    server:close()
    listener:close()
  end)

  it("sends a request and reads pipelined responses split anywhere", function()
    assert.is_truthy(conn:send("GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.same("/one", server:read_request(1).path)
    assert.are.same("/two", server:read_request(1).path)
    local bytes = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
                  .. "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n"
    for i = 1, #bytes, 7 do assert.is_truthy(server:send(bytes:sub(i, i + 6))) end
    local r1 = assert(conn:read_response(1))
    local r2 = assert(conn:read_response(1))
    assert.are.same({ 200, "one", 404, "Not Found", "two" },
                    { r1.status, r1.body, r2.status, r2.reason, r2.body })
    assert.are.same({ nil, "timeout" }, { conn:read_response(0.02) })
  end)

  it("reads a body that ends with the connection", function()
    server:send("HTTP/1.1 200 OK\r\n\r\nuntil")
    server:send(" close")
    server:close()
    assert.are.same("until close", conn:read_response(1).body)
    assert.are.same({ nil, "closed" }, { conn:read_response(1) })
  end)

  it("reports a response cut short", function()
    server:send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    server:close()
    assert.matches("^closed after", select(2, conn:read_response(1)))
  end)

  it("honours HEAD", function()
    server:send("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert.are.same("", conn:read_response(1, { head = true }).body)
    assert.are.same(204, conn:read_response({ timeout = 1 }).status)
  end)

  it("streams chunks with read_head / read_chunk", function()
    server:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    assert.are.same(200, conn:read_head(1).status)
    assert.are.same("first", conn:read_chunk(1))
    assert.are.same({ nil, "timeout" }, { conn:read_chunk(0.02) })
    server:send("6\r\nsecond\r\n0\r\n\r\n")
    assert.are.same("second", conn:read_chunk(1))
    assert.are.same("", conn:read_chunk(1))
  end)

  it("recv, read_all and is_closed", function()
    assert.are.same({ nil, "timeout" }, { conn:recv(0.02) })
    server:send("abc")
    assert.are.same("abc", conn:recv(1))
    assert.are.same(false, conn:is_closed(0.02))
    server:send("def")
    server:close()
    assert.are.same(true, conn:is_closed(1))
    assert.are.same("def", conn:read_all(1))             -- kept while waiting for the close
    assert.are.same({ nil, "closed" }, { conn:recv(1) })
  end)

  it("sees a reset as closed", function()
    conn:reset()
    assert.are.same(true, server:is_closed(1))
    assert.are.same({ nil, "closed" }, { conn:send("x") })
  end)
end)

describe("without a server", function()
  local port
  lazy_setup(function()
    local l = assert(client.listen(0))
    port = l.port
    l:close()                                  -- now nothing listens there
  end)

  it("connect is refused", function()
    assert.are.same({ nil, "connection refused" }, { client.connect(port) })
    assert.are.same({ nil, "connection refused" }, { client.request(port, "GET", "/") })
  end)

  it("concurrent counts errors and timeouts", function()
    local r = client.concurrent(port, 5, nil, 1)
    assert.are.same({ 0, 5, { ["connection refused"] = 5 } }, { r.ok, r.errors, r.error_kinds })
    local l = assert(client.listen(0))       -- accepts in the kernel, never answers
    r = client.concurrent(l.port, 3, "GET / HTTP/1.1\r\n\r\n", 0.05)
    l:close()
    assert.are.same({ 0, 3, 3, {} }, { r.ok, r.errors, r.timeouts, r.statuses })
    assert.is_truthy(r.elapsed >= 0.05 and r.elapsed < 1, r.elapsed)
  end)

  it("builds requests with Host, Content-Length and Connection: close", function()
    assert.are.same("POST /x HTTP/1.1\r\nX-Y: 1\r\nX-Y: 2\r\nHost: 127.0.0.1:80\r\nContent-Length: 2\r\n"
                    .. "Connection: close\r\n\r\nhi",
                    client.build_request(80, "POST", "/x",
                                         { body = "hi", headers = { ["X-Y"] = { "1", "2" } } }))
  end)
end)

describe("time", function()
  it("now and sleep", function()
    local t0 = client.now()
    client.sleep(0.02)
    local dt = client.now() - t0
    assert.is_truthy(dt >= 0.019 and dt < 0.5, dt)
  end)
end)
