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
    eq(res.status, 200, res.body)
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
    eq(res.status, 200, res.body)
    return res:json()
  end

  before_all(function() srv = t.server{ app = "tests/apps/client" } end)
  after_all(function() srv:stop() end)

  describe("against a moonlet upstream", function()
    it("GETs JSON with headers and a query", function()
      local r = call{ url = "http://{self}/up/echo?a=1&b=two", headers = { ["X-Test"] = "v" } }
      eq(r.status, 200)
      eq(r.headers["content-type"], "application/json")
      local e = t.json_decode(r.body)
      eq(e.method, "GET")
      eq(e.query, { a = "1", b = "two" })
      eq(e.headers["x-test"], "v")
      match(e.headers["user-agent"], "^moonlet/")
      eq(e.headers.host, "127.0.0.1:" .. srv.port)
    end)

    it("POSTs a string body, and a table as JSON", function()
      local e = t.json_decode(call{ method = "POST", url = "http://{self}/up/echo", body = "hello" }.body)
      eq(e.method, "POST")
      eq(e.body, "hello")
      eq(e.headers["content-length"], "5")
      e = t.json_decode(call{ method = "PUT", url = "http://{self}/up/echo", body = { a = { 1, 2 } } }.body)
      eq(e.method, "PUT")
      eq(t.json_decode(e.body), { a = { 1, 2 } })
      eq(e.headers["content-type"], "application/json")
    end)

    it("returns any status with its headers; repeated headers are joined", function()
      local r = call{ url = "http://{self}/up/status/404" }
      eq(r.status, 404)
      eq(r.headers["x-up"], "yes")
      eq(t.json_decode(r.body), { code = 404 })
      r = call{ url = "http://{self}/up/cookies" }
      eq(r.headers["set-cookie"], "a=1, b=2")
    end)

    it("HEAD has no body", function()
      local r = call{ method = "HEAD", url = "http://{self}/up/text" }
      eq(r.status, 200)
      eq(r.body, "")
      eq(r.headers["content-length"], "10")
      -- the connection stays usable after a bodiless response
      eq(call{ url = "http://{self}/up/text" }.body, "plain text")
    end)

    it("res:json() decodes, or says the body is not JSON", function()
      local r = assert(t.request(srv.port, "GET", "/bad-json")):json()
      match(r.err, "^invalid json")
    end)

    it("works over IPv6", function()
      local srv6 = t.server{ app = "tests/apps/client", args = { "--host", "::1" } }
      local r = call{ url = fmt("http://[::1]:%d/up/echo", srv6.port) }
      srv6:stop()
      eq(r.status, 200, r.err)
      eq(t.json_decode(r.body).headers.host, fmt("[::1]:%d", srv6.port))
    end)

    it("resolves names through DNS", function()
      local r = call{ url = fmt("http://localhost:%d/up/text", srv.port) }
      eq(r.body, "plain text", r.err)
    end)

    it("raises on misuse", function()
      local r = assert(t.request(srv.port, "GET", "/misuse")):json()
      for k, msg in pairs(r) do match(msg, "bad argument", k) end
      match(r.bad_scheme, "http:// or https://")
      match(r.bad_header, "CR, LF")
      match(r.bad_port, "port out of range")
      match(r.bad_timeout, "timeout must be")
    end)
  end)

  describe("fails with nil and a message that says what and where", function()
    it("connection refused", function()
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      eq(call{ url = fmt("http://127.0.0.1:%d/x", port) }.err,
         fmt("connect: connection refused (127.0.0.1:%d)", port))
    end)

    it("inside moonlet.gather: nil in the call's slot, never the message", function()
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      local path = fmt("/gather-get?url=http://127.0.0.1:%d/x", port)
      eq(assert(t.request(srv.port, "GET", path)):json(), { type = "nil" })
      path = fmt("/gather-get?url=http://127.0.0.1:%d/up/text", srv.port)
      eq(assert(t.request(srv.port, "GET", path)):json(), { type = "table", status = 200 })
    end)

    it("unknown host", function()
      match(call{ url = "http://nosuch.invalid/" }.err, "^dns: .+ %(nosuch%.invalid%)$")
    end)

    it("total timeout", function()
      local t0 = t.now()
      local r = call{ url = "http://{self}/up/slow?s=2", timeout = 0.2 }
      eq(r.err, fmt("timeout: no response within 0.2 s (GET http://127.0.0.1:%d/up/slow?s=2)", srv.port))
      ok(t.now() - t0 < 1.5, "took " .. (t.now() - t0))
    end)

    it("read timeout: headers, then silence", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/stall", l.port), read_timeout = 0.2 }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12")
      local r = report_of(c)
      eq(r.err, fmt("timeout: no data for 0.2 s (GET http://127.0.0.1:%d/stall)", l.port))
      up:close()
      l:close()
    end)

    it("connect timeout covers the TLS handshake", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("https://127.0.0.1:%d/", l.port), connect_timeout = 0.2 }
      local up = assert(l:accept(5))   -- accepted, but nobody answers the ClientHello
      local r = report_of(c)
      eq(r.err, fmt("timeout: no connection within 0.2 s (127.0.0.1:%d)", l.port))
      ok(up:is_closed(2), "the connection was not closed")
      l:close()
    end)

    it("a response over max_size", function()
      local r = call{ url = "http://{self}/up/big?n=2000", max_size = 1000 }
      eq(r.err, fmt("too large: response body over 1000 bytes (GET http://127.0.0.1:%d/up/big?n=2000)", srv.port))
      eq(#call{ url = "http://{self}/up/big?n=1000", max_size = 1000 }.body, 1000)
    end)

    it("a chunked response over max_size", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/big", l.port), max_size = 8 }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
      match(report_of(c).err, "^too large: response body over 8 bytes")
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
      eq(report_of(c).err, fmt("closed: connection closed after 10 of 100 body bytes (GET http://127.0.0.1:%d/x)", l.port))
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
      match(report_of(c).err, "^read: connection reset by peer %(GET http://127%.0%.0%.1:%d+/x%)$")
      l:close()
    end)

    it("an invalid response", function()
      local l = assert(t.listen(0))
      local c = call_async{ url = fmt("http://127.0.0.1:%d/x", l.port) }
      local up = assert(l:accept(5))
      assert(up:read_request(5))
      up:send("HTTP/1.1 abc\r\n\r\n")
      match(report_of(c).err, "^invalid response: .+ %(GET http://127%.0%.0%.1:%d+/x%)$")
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
      eq(r.status, 200)
      eq(r.body, "hello world")
      eq(r.headers["x-a"], "1")
    end)

    it("close-delimited", function()
      local r = serve_raw({ "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart1", "part2" }, true)
      eq(r.status, 200)
      eq(r.body, "part1part2")
    end)

    it("100 Continue before the response; 204 without a body", function()
      local r = serve_raw{ "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok" }
      eq(r.status, 201)
      eq(r.body, "ok")
      r = serve_raw{ "HTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n" }
      eq(r.status, 204)
      eq(r.body, "")
      eq(r.headers["x-b"], "2")
    end)

    it("a 304's Content-Length announces no body, so max_size does not apply", function()
      local r = serve_raw({ "HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\nETag: \"x\"\r\n\r\n" },
                          false, { max_size = 1000 })
      eq(r.status, 304)
      eq(r.body, "")
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
        eq(req.path, "/k" .. i)
        up:send(ok_resp)
      end
      local r = report_of(c)
      for i = 1, 3 do eq(r.results[i].body, "ok", r.results[i].err) end
      eq(l:accept(0.1), nil, "a second connection was opened")
      up:close()
      l:close()
    end)

    it("keepalive = false and Connection: close use fresh connections", function()
      local l = assert(t.listen(0))
      local url = fmt("http://127.0.0.1:%d/k", l.port)
      local c = call_async{ calls = { { url = url, keepalive = false }, { url = url }, { url = url } } }
      local up = assert(l:accept(5))
      eq(assert(up:read_request(5)).headers.connection, "close")
      up:send(ok_resp)
      local up2 = assert(l:accept(5))
      assert(up2:read_request(5))
      up2:send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
      local up3 = assert(l:accept(5))
      assert(up3:read_request(5))
      up3:send(ok_resp)
      local r = report_of(c)
      for i = 1, 3 do eq(r.results[i].body, "ok", r.results[i].err) end
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
      eq(r.results[3].body, "ok", r.results[3].err)
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
      eq(assert(up:read_request(5)).path, "/k2")   -- the second came on the same connection
      up:close()                                   -- and dies without an answer
      local up2 = assert(l:accept(5))
      eq(assert(up2:read_request(5)).path, "/k2")  -- so it is sent again, once
      up2:send(ok_resp)
      eq(assert(up2:read_request(5)).path, "/k3")  -- a POST is not retried
      up2:close()
      local r = report_of(c)
      eq(r.results[2].body, "ok", r.results[2].err)
      eq(r.results[3].err, fmt("closed: connection closed before any response (POST %s3)", url))
      l:close()
    end)
  end)

  describe("https", function()
    local pki, s
    before_all(function()
      pki = tls.make_pki(t.tmpdir(), { dns = "localhost" })
      s = tls.s_server(pki, { ["hello.txt"] = "hello over tls" })
    end)
    after_all(function() if s then s:stop() end end)

    it("verifies against ca_file", function()
      local r = call{ url = fmt("https://localhost:%d/hello.txt", s.port), ca_file = pki.ca }
      eq(r.err, nil)
      eq(r.status, 200)
      eq(r.body, "hello over tls")
    end)

    it("refuses a certificate the system CAs do not trust", function()
      local r = call{ url = fmt("https://localhost:%d/hello.txt", s.port) }
      match(r.err, fmt("^tls: certificate verify failed: .+ %%(localhost:%d%%)$", s.port))
    end)

    it("refuses a certificate for another name", function()
      local r = call{ url = fmt("https://127.0.0.1:%d/hello.txt", s.port), ca_file = pki.ca }
      match(r.err, "^tls: certificate verify failed: .*mismatch")
    end)

    it("verify = false accepts any certificate", function()
      local r = call{ url = fmt("https://127.0.0.1:%d/hello.txt", s.port), verify = false }
      eq(r.body, "hello over tls", r.err)
    end)

    it("a missing ca_file is an error", function()
      match(call{ url = fmt("https://localhost:%d/", s.port), ca_file = "/nonexistent.pem" }.err,
            "^tls: cannot load ca_file /nonexistent%.pem")
    end)

    it("from a pooled route", function()
      local r = call({ url = fmt("https://localhost:%d/hello.txt", s.port), ca_file = pki.ca }, "/pool/call")
      eq(r.body, "hello over tls", r.err)
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
      ok(up:is_closed(3), "moonlet kept the upstream connection open")
      eq(assert(t.request(srv.port, "GET", "/flag?k=hang_returned")):json(), {})
      -- the server goes on: the next call works
      eq(call{ url = "http://{self}/up/text" }.body, "plain text")
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
      eq(res:json(), { err = "timeout" })
      ok(up:is_closed(3), "the cancelled call kept its connection open")
      c:close()
      l:close()
    end)
  end)

  describe("from a pooled route", function()
    it("blocks the pool thread and returns the same results", function()
      local r = assert(t.request(srv.port, "GET", "/pool/get?url=http://{self}/up/echo?x=1")):json()
      eq(r.in_pool, true)
      eq(r.r.status, 200)
      eq(r.json.query, { x = "1" })
      local l = assert(t.listen(0))
      local port = l.port
      l:close()
      eq(call({ url = fmt("http://127.0.0.1:%d/", port) }, "/pool/call").err,
         fmt("connect: connection refused (127.0.0.1:%d)", port))
      eq(call({ url = "http://{self}/up/slow?s=2", timeout = 0.2 }, "/pool/call").err,
         fmt("timeout: no response within 0.2 s (GET http://127.0.0.1:%d/up/slow?s=2)", srv.port))
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
      eq(r.results[2].body, "ok", r.results[2].err)
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
    eq(r.err, fmt("connect: connection refused (127.0.0.1:%d)", port))
  end)
end)

describe("apps/aggregator", function()
  local srv
  before_all(function()
    local l = assert(t.listen(0))   -- a free port, so UPSTREAM_URL can name it before start
    local port = l.port
    l:close()
    srv = t.server{ app = "apps/aggregator", port = port,
                    env = { UPSTREAM_URL = fmt("http://127.0.0.1:%d", port) } }
  end)
  after_all(function() srv:stop() end)

  it("delays", function()
    eq(assert(t.request(srv.port, "GET", "/upstream/delay?ms=20")):json(), { ms = 20 })
  end)

  it("fans out concurrently", function()
    local t0 = t.now()
    local r = assert(t.request(srv.port, "GET", "/fanout?n=10&ms=100")):json()
    local took = t.now() - t0
    eq(r.count, 10)
    eq(#r.results, 10)
    for i = 1, 10 do eq(r.results[i], { ms = 100 }) end
    ok(took < 0.9, "10 calls of 100 ms took " .. took .. " s")
    r = assert(t.request(srv.port, "GET", "/fanout?n=100&ms=100")):json()
    eq(#r.results, 100)
    match(assert(t.request(srv.port, "GET", "/fanout?n=0&ms=1")).body, '"results":%[%]')
  end)

  it("calls the configured upstream, whatever the client's Host header says", function()
    local c = t.connect(srv.port)
    c:send("GET /fanout?n=2&ms=1 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n")
    local res = assert(c:read_response(5))
    c:close()
    eq(res.status, 200)
    eq(res:json().results, { { ms = 1 }, { ms = 1 } })
  end)
end)

describe("moonlet.http in a spec", function()
  it("blocks the runner: same API, same results", function()
    local http = require("moonlet").http
    local srv = t.server{ app = "tests/apps/client" }
    local res, err = http.get(srv.url .. "/up/echo?q=1", { headers = { ["x-from"] = "spec" } })
    ok(res, err)
    eq(res.status, 200)
    eq(res:json().headers["x-from"], "spec")
    eq(assert(http.post(srv.url .. "/up/echo", { a = 1 })):json().body, '{"a":1}')
    srv:stop()
    -- the idle connection to the stopped server is noticed, not reused
    local l = assert(t.listen(0))
    local port = l.port
    l:close()
    local res2, err2 = http.get(fmt("http://127.0.0.1:%d/", port))
    eq(res2, nil)
    eq(err2, fmt("connect: connection refused (127.0.0.1:%d)", port))
  end)
end)
