-- moonlet.http, the HTTP client: against a real moonlet upstream, raw fake upstreams
-- (t.listen: the spec plays the server byte by byte), and openssl s_server for https.
-- The spec talks to tests/apps/client, which makes the calls and reports what came back.
local t = require "moonlet.testing"
local tls = require "tests.support.tls"

local fmt = string.format
local json_encode = require("cjson").encode

describe("moonlet.http", function()
  local srv

  -- POST /call (or /pool/call) with the request options; returns the app's report.
  local function call(spec, path)
    local res = assert(t.request(srv.port, "POST", path or "/call",
                                 { body = json_encode(spec), timeout = 20 }))
    assert.are.same(200, res.status, res.body)
    return res:json()
  end

  -- Sends the call to moonlet without waiting: the spec then plays the upstream.
  local function call_async(spec, path)
    local c = assert(t.connect(srv.port))
    local body = json_encode(spec)
    assert(c:send(fmt("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n%s",
                      path or "/call", srv.port, #body, body)))
    return c
  end

  local function report_of(c)
    local res = assert(c:read_response(20))
    c:close()
    assert.are.same(200, res.status, res.body)
    return res:json()
  end

  lazy_setup(function() srv = t.server{ app = "tests/apps/client" } end)
  lazy_teardown(function() srv:stop() end)

  describe("against a moonlet upstream", function()
    it("GETs JSON with headers and a query", function()
      local r = call{ url = "http://{self}/up/echo?a=1&b=two", headers = { ["X-Test"] = "v" } }
      assert.are.same(200, r.status)
      assert.are.same("application/json", r.headers["content-type"])
      local e = t.json_decode(r.body)
      assert.are.same("GET", e.method)
      assert.are.same({ a = "1", b = "two" }, e.query)
      assert.are.same("v", e.headers["x-test"])
      assert.matches("^moonlet/", e.headers["user-agent"])
      assert.are.same("127.0.0.1:" .. srv.port, e.headers.host)
    end)

    it("POSTs a string body, and a table as JSON", function()
      local e = t.json_decode(call{ method = "POST", url = "http://{self}/up/echo", body = "hello" }.body)
      assert.are.same("POST", e.method)
      assert.are.same("hello", e.body)
      assert.are.same("5", e.headers["content-length"])
      e = t.json_decode(call{ method = "PUT", url = "http://{self}/up/echo", body = { a = { 1, 2 } } }.body)
      assert.are.same("PUT", e.method)
      assert.are.same({ a = { 1, 2 } }, t.json_decode(e.body))
      assert.are.same("application/json", e.headers["content-type"])
    end)

    it("returns any status with its headers; repeated headers are joined", function()
      local r = call{ url = "http://{self}/up/status/404" }
      assert.are.same(404, r.status)
      assert.are.same("yes", r.headers["x-up"])
      assert.are.same({ code = 404 }, t.json_decode(r.body))
      r = call{ url = "http://{self}/up/cookies" }
      assert.are.same("a=1, b=2", r.headers["set-cookie"])
    end)

    it("HEAD has no body", function()
      local r = call{ method = "HEAD", url = "http://{self}/up/text" }
      assert.are.same(200, r.status)
      assert.are.same("", r.body)
      assert.are.same("10", r.headers["content-length"])
      -- the connection stays usable after a bodiless response
      assert.are.same("plain text", call{ url = "http://{self}/up/text" }.body)
    end)

    it("res:json() decodes, or says the body is not JSON", function()
      local r = assert(t.request(srv.port, "GET", "/bad-json")):json()
      assert.matches("^invalid json", r.err)
    end)

    it("works over IPv6", function()
      local srv6 = t.server{ app = "tests/apps/client", args = { "--host", "::1" } }
      local r = call{ url = fmt("http://[::1]:%d/up/echo", srv6.port) }
      srv6:stop()
      assert.are.same(200, r.status, r.err)
      assert.are.same(fmt("[::1]:%d", srv6.port), t.json_decode(r.body).headers.host)
    end)

    it("resolves names through DNS", function()
      local r = call{ url = fmt("http://localhost:%d/up/text", srv.port) }
      assert.are.same("plain text", r.body, r.err)
    end)

    it("raises on misuse", function()
      local r = assert(t.request(srv.port, "GET", "/misuse")):json()
      for k, msg in pairs(r) do assert.matches("bad argument", msg, k) end
      assert.matches("http:// or https://", r.bad_scheme)
      assert.matches("CR, LF", r.bad_header)
      assert.matches("port out of range", r.bad_port)
      assert.matches("timeout must be", r.bad_timeout)
    end)
  end)

  describe("fails with nil and a message that says what and where", function()
    it("connection refused", function()
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      assert.are.same(fmt("connect: connection refused (127.0.0.1:%d)", port),
                      call{ url = fmt("http://127.0.0.1:%d/x", port) }.err)
    end)

    it("inside moonlet.gather: nil in the call's slot, never the message", function()
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      local path = fmt("/gather-get?url=http://127.0.0.1:%d/x", port)
      assert.are.same({ type = "nil" }, assert(t.request(srv.port, "GET", path)):json())
      path = fmt("/gather-get?url=http://127.0.0.1:%d/up/text", srv.port)
      assert.are.same({ type = "table", status = 200 },
                      assert(t.request(srv.port, "GET", path)):json())
    end)

    it("unknown host", function()
      assert.matches("^dns: .+ %(nosuch%.invalid%)$", call{ url = "http://nosuch.invalid/" }.err)
    end)

    it("total timeout", function()
      local t0 = t.now()
      local r = call{ url = "http://{self}/up/slow?s=2", timeout = 0.2 }
      assert.are.same(fmt("timeout: no response within 0.2 s (GET http://127.0.0.1:%d/up/slow?s=2)", srv.port),
                      r.err)
      assert.is_truthy(t.now() - t0 < 1.5, "took " .. (t.now() - t0))
    end)

    it("read timeout: headers, then silence", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/stall", l.port), read_timeout = 0.2 }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12")
      local r = report_of(c)
      assert.are.same(fmt("timeout: no data for 0.2 s (GET http://127.0.0.1:%d/stall)", l.port),
                      r.err)
      up:close()
      l:close()
    end)

    it("connect timeout covers the TLS handshake", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("https://127.0.0.1:%d/", l.port), connect_timeout = 0.2 }
      local up = assert(l:accept(5))   -- accepted, but nobody answers the ClientHello
      local r = report_of(c)
      assert.are.same(fmt("timeout: no connection within 0.2 s (127.0.0.1:%d)", l.port), r.err)
      assert.is_truthy(up:is_closed(2), "the connection was not closed")
      l:close()
    end)

    it("a response over max_size", function()
      local r = call{ url = "http://{self}/up/big?n=2000", max_size = 1000 }
      assert.are.same(fmt("too large: response body over 1000 bytes (GET http://127.0.0.1:%d/up/big?n=2000)", srv.port),
                      r.err)
      assert.are.same(1000, #call{ url = "http://{self}/up/big?n=1000", max_size = 1000 }.body)
    end)

    it("a chunked response over max_size", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/big", l.port), max_size = 8 }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
      assert.matches("^too large: response body over 8 bytes", report_of(c).err)
      up:close()
      l:close()
    end)

    it("the upstream closing mid-body", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/x", l.port) }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
      t.sleep(0.05)
      up:close()
      assert.are.same(fmt("closed: connection closed after 10 of 100 body bytes (GET http://127.0.0.1:%d/x)", l.port),
                      report_of(c).err)
      l:close()
    end)

    it("the upstream resetting mid-body", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/x", l.port) }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
      t.sleep(0.05)
      up:reset()
      assert.matches("^read: connection reset by peer %(GET http://127%.0%.0%.1:%d+/x%)$",
                     report_of(c).err)
      l:close()
    end)

    it("an invalid response", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/x", l.port) }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 abc\r\n\r\n")
      assert.matches("^invalid response: .+ %(GET http://127%.0%.0%.1:%d+/x%)$", report_of(c).err)
      up:close()
      l:close()
    end)
  end)

  describe("response framing", function()
    local function serve_raw(raw, close_after, opts)
      local l = assert(t.listen(0))
      local spec = { url = fmt("http://127.0.0.1:%d/raw", l.port) }
      for k, v in pairs(opts or {}) do spec[k] = v end
      local c = call_async(spec)
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      for _, piece in ipairs(raw) do
        up:send(piece)
        t.sleep(0.02)
      end
      if close_after then up:close() end
      local r = report_of(c)
      up:close()
      l:close()
      return r
    end

    it("chunked, in pieces, with trailers", function()
      local r = serve_raw{ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhel",
                           "lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n" }
      assert.are.same(200, r.status)
      assert.are.same("hello world", r.body)
      assert.are.same("1", r.headers["x-a"])
    end)

    it("close-delimited", function()
      local r = serve_raw({ "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1", "part2" }, true)
      assert.are.same(200, r.status)
      assert.are.same("part1part2", r.body)
    end)

    it("100 Continue before the response; 204 without a body", function()
      local r = serve_raw{ "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" }
      assert.are.same(201, r.status)
      assert.are.same("ok", r.body)
      r = serve_raw{ "HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n" }
      assert.are.same(204, r.status)
      assert.are.same("", r.body)
      assert.are.same("2", r.headers["x-b"])
    end)

    it("a 304's Content-Length announces no body, so max_size does not apply", function()
      local r = serve_raw({ "HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\nETag: \"x\"\r\n\r\n" },
                          false, { max_size = 1000 })
      assert.are.same(304, r.status)
      assert.are.same("", r.body)
    end)
  end)

  describe("keep-alive", function()
    local ok_resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    it("reuses one connection for sequential requests", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async{ calls = { { url = url .. "1" }, { url = url .. "2" }, { url = url .. "3" } } }
      local up = assert(l:accept(5))
      for i = 1, 3 do
        local req = assert(up:read_request(5))
        assert.are.same("/k" .. i, req.path)
        up:send(ok_resp)
      end
      local r = report_of(c)
      for i = 1, 3 do assert.are.same("ok", r.results[i].body, r.results[i].err) end
      assert.are.same(nil, l:accept(0.1), "a second connection was opened")
      up:close()
      l:close()
    end)

    it("keepalive = false and Connection: close use fresh connections", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async{ calls = { { url = url, keepalive = false }, { url = url }, { url = url } } }
      local up = assert(l:accept(5))
      assert.are.same("close", assert(up:read_request(5)).headers.connection)
      up:send(ok_resp)
      local up2 = assert(l:accept(5))
      assert(up2:read_request(5))
      up2:send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
      local up3 = assert(l:accept(5))
      assert(up3:read_request(5))
      up3:send(ok_resp)
      local r = report_of(c)
      for i = 1, 3 do assert.are.same("ok", r.results[i].body, r.results[i].err) end
      up:close(); up2:close(); up3:close()
      l:close()
    end)

    it("a connection the upstream closed while idle is not reused", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async{ calls = { { url = url }, { url = "http://{self}/up/slow?s=0.2" }, { url = url } } }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send(ok_resp)
      up:close()                       -- while moonlet waits on the slow call
      local up2 = assert(l:accept(5))
      assert(up2:read_request(5))
      up2:send(ok_resp)
      local r = report_of(c)
      assert.are.same("ok", r.results[3].body, r.results[3].err)
      up2:close()
      l:close()
    end)

    it("retries an idempotent request once when a reused connection fails first", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async{ calls = { { url = url }, { url = url .. "2" },
                                      { method = "POST", url = url .. "3", body = "x" } } }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send(ok_resp)
      assert.are.same("/k2",
                      assert(up:read_request(5)).path)   -- the second came on the same connection
      up:close()                                   -- and dies without an answer
      local up2 = assert(l:accept(5))
      assert.are.same("/k2", assert(up2:read_request(5)).path)  -- so it is sent again, once
      up2:send(ok_resp)
      assert.are.same("/k3", assert(up2:read_request(5)).path)  -- a POST is not retried
      up2:close()
      local r = report_of(c)
      assert.are.same("ok", r.results[2].body, r.results[2].err)
      assert.are.same(fmt("closed: connection closed before any response (POST %s3)", url),
                      r.results[3].err)
      l:close()
    end)
  end)

  describe("https", function()
    local pki, s
    lazy_setup(function()
      pki = tls.make_pki(t.tmpdir(), { dns = "localhost" })
      s = tls.s_server(pki, { ["hello.txt"] = "hello over tls" })
    end)
    lazy_teardown(function() if s then s:stop() end end)

    it("verifies against ca_file", function()
      local r = call{ url = fmt("https://localhost:%d/hello.txt", s.port), ca_file = pki.ca }
      assert.are.same(nil, r.err)
      assert.are.same(200, r.status)
      assert.are.same("hello over tls", r.body)
    end)

    it("refuses a certificate the system CAs do not trust", function()
      local r = call{ url = fmt("https://localhost:%d/hello.txt", s.port) }
      assert.matches(fmt("^tls: certificate verify failed: .+ %%(localhost:%d%%)$", s.port), r.err)
    end)

    it("refuses a certificate for another name", function()
      local r = call{ url = fmt("https://127.0.0.1:%d/hello.txt", s.port), ca_file = pki.ca }
      assert.matches("^tls: certificate verify failed: .*mismatch", r.err)
    end)

    it("verify = false accepts any certificate", function()
      local r = call{ url = fmt("https://127.0.0.1:%d/hello.txt", s.port), verify = false }
      assert.are.same("hello over tls", r.body, r.err)
    end)

    it("a missing ca_file is an error", function()
      assert.matches("^tls: cannot load ca_file /nonexistent%.pem",
                     call{ url = fmt("https://localhost:%d/", s.port), ca_file = "/nonexistent.pem" }.err)
    end)

    it("from a pooled route", function()
      local r = call({ url = fmt("https://localhost:%d/hello.txt", s.port), ca_file = pki.ca }, "/pool/call")
      assert.are.same("hello over tls", r.body, r.err)
    end)
  end)

  describe("cancellation", function()
    it("closes the upstream connection when the client disconnects", function()
      local l = assert(t.listen(0))
      local c = assert(t.connect(srv.port))
      c:send(fmt("GET /hang?port=%d HTTP/1.1\r\nHost: x\r\n\r\n", l.port))
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      c:close()
      assert.is_truthy(up:is_closed(3), "moonlet kept the upstream connection open")
      assert.are.same({}, assert(t.request(srv.port, "GET", "/flag?k=hang_returned")):json())
      -- the server goes on: the next call works
      assert.are.same("plain text", call{ url = "http://{self}/up/text" }.body)
      l:close()
    end)
  end)

  describe("moonlet.timeout", function()
    it("cancels a call: nil, 'timeout', and the upstream connection is closed", function()
      local l = assert(t.listen(0))
      local c = assert(t.connect(srv.port))
      c:send(fmt("GET /timeout-get?port=%d&s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n", l.port))
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      local res = assert(c:read_response(5))
      assert.are.same({ err = "timeout" }, res:json())
      assert.is_truthy(up:is_closed(3), "the cancelled call kept its connection open")
      c:close()
      l:close()
    end)
  end)

  describe("from a pooled route", function()
    it("blocks the pool thread and returns the same results", function()
      local r = assert(t.request(srv.port, "GET", "/pool/get?url=http://{self}/up/echo?x=1")):json()
      assert.are.same(true, r.in_pool)
      assert.are.same(200, r.r.status)
      assert.are.same({ x = "1" }, r.json.query)
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      assert.are.same(fmt("connect: connection refused (127.0.0.1:%d)", port),
                      call({ url = fmt("http://127.0.0.1:%d/", port) }, "/pool/call").err)
      assert.are.same(fmt("timeout: no response within 0.2 s (GET http://127.0.0.1:%d/up/slow?s=2)", srv.port),
                      call({ url = "http://{self}/up/slow?s=2", timeout = 0.2 }, "/pool/call").err)
    end)

    it("keeps connections alive per pool thread", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async({ calls = { { url = url }, { url = url } } }, "/pool/call")
      local up = assert(l:accept(5))
      for _ = 1, 2 do
        assert(up:read_request(5))
        up:send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
      end
      local r = report_of(c)
      assert.are.same("ok", r.results[2].body, r.results[2].err)
      up:close()
      l:close()
    end)
  end)

  it("works at app load, outside any request", function()
    local l = assert(t.listen(0))
    local port = l.port
    l:close()
    local s2 = t.server{ app = "tests/apps/client", env = { CLIENT_LOAD_URL = fmt("http://127.0.0.1:%d/", port) } }
    local r = assert(t.request(s2.port, "GET", "/load-result")):json()
    s2:stop()
    assert.are.same(fmt("connect: connection refused (127.0.0.1:%d)", port), r.err)
  end)
end)

describe("apps/aggregator", function()
  local srv
  lazy_setup(function()
    local l = assert(t.listen(0))   -- a free port, so UPSTREAM_URL can name it before start
    local port = l.port
    l:close()
    srv = t.server{ app = "apps/aggregator", port = port,
                    env = { UPSTREAM_URL = fmt("http://127.0.0.1:%d", port) } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("delays", function()
    assert.are.same({ ms = 20 }, assert(t.request(srv.port, "GET", "/upstream/delay?ms=20")):json())
  end)

  it("fans out concurrently", function()
    local t0 = t.now()
    local r = assert(t.request(srv.port, "GET", "/fanout?n=10&ms=100")):json()
    local took = t.now() - t0
    assert.are.same(10, r.count)
    assert.are.same(10, #r.results)
    for i = 1, 10 do assert.are.same({ ms = 100 }, r.results[i]) end
    assert.is_truthy(took < 0.9, "10 calls of 100 ms took " .. took .. " s")
    r = assert(t.request(srv.port, "GET", "/fanout?n=100&ms=100")):json()
    assert.are.same(100, #r.results)
    assert.matches('"results":%[%]', assert(t.request(srv.port, "GET", "/fanout?n=0&ms=1")).body)
  end)

  it("calls the configured upstream, whatever the client's Host header says", function()
    local c = t.connect(srv.port)
    c:send("GET /fanout?n=2&ms=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
    local res = assert(c:read_response(5))
    c:close()
    assert.are.same(200, res.status)
    assert.are.same({ { ms = 1 }, { ms = 1 } }, res:json().results)
  end)
end)

describe("moonlet.http in a spec", function()
  it("blocks the runner: same API, same results", function()
    local http = require("moonlet").http
    local srv = t.server{ app = "tests/apps/client" }
    local res, err = http.get(srv.url .. "/up/echo?q=1", { headers = { ["x-from"] = "spec" } })
    assert.is_truthy(res, err)
    assert.are.same(200, res.status)
    assert.are.same("spec", res:json().headers["x-from"])
    assert.are.same('{"a":1}', assert(http.post(srv.url .. "/up/echo", { a = 1 })):json().body)
    srv:stop()
    -- the idle connection to the stopped server is noticed, not reused
    local l = assert(t.listen(0))
    local port = l.port
    l:close()
    local res2, err2 = http.get(fmt("http://127.0.0.1:%d/", port))
    assert.are.same(nil, res2)
    assert.are.same(fmt("connect: connection refused (127.0.0.1:%d)", port), err2)
  end)
end)
