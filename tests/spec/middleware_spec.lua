-- app:use and moonlet.middleware (cors, gzip, request_id) through the real binary
-- (tests/apps/middleware), with raw requests, curl and Python's zlib.
local t = require "moonlet.testing"

describe("middleware", function()
  local srv, base
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/middleware", args = { "--log-level", "info" } }
    base = "http://127.0.0.1:" .. srv.port
  end)
  lazy_teardown(function() srv:stop() end)

  local function req(method, path, headers, body)
    return assert(t.request(srv.port, method, path, { headers = headers, body = body }))
  end

  describe("app:use", function()
    it("runs in registration order, outermost first, around the handler", function()
      local res = req("GET", "/hello")
      assert.are.same(200, res.status)
      assert.are.same("a>b>handler<b<a", res.headers["x-trace"])
    end)

    it("may answer without calling next", function()
      local res = req("GET", "/hello", { ["x-block"] = "1" })
      assert.are.same(403, res.status)
      assert.are.same({ detail = "blocked by middleware" }, res:json())
      assert.are.same("a>b><b<a", res.headers["x-trace"])
    end)

    it("may replace the response", function()
      local res = req("GET", "/hello", { ["x-replace"] = "1" })
      assert.are.same(202, res.status)
      assert.are.same("replaced 200", res.body)
    end)

    it("sees a failing handler's 500 as a response", function()
      local res = req("GET", "/fail", { ["x-replace"] = "1" })
      assert.are.same("replaced 500", res.body)
      assert.truthy(srv:wait_log("GET /fail: .*handler failed", 5))
    end)

    it("answers a middleware's http_error, and 500 for its bugs", function()
      local res = req("GET", "/hello", { ["x-raise"] = "1" })
      assert.are.same(401, res.status)
      assert.are.same({ detail = "no token" }, res:json())
      assert.are.same(500, req("GET", "/hello", { ["x-crash"] = "1" }).status)
      assert.truthy(srv:wait_log("middleware bug", 5))
      assert.are.same(500, req("GET", "/hello", { ["x-bad"] = "1" }).status)
      assert.truthy(srv:wait_log("returned string, not a response", 5))
    end)

    it("runs for requests no route takes (404, 405)", function()
      local res = req("GET", "/nope")
      assert.are.same(404, res.status)
      assert.are.same({ detail = "Not Found" }, res:json())
      assert.are.same("a>b><b<a", res.headers["x-trace"])
      res = req("DELETE", "/hello")
      assert.are.same(405, res.status)
      assert.are.same("GET, HEAD", res.headers["allow"])
      assert.are.same("a>b><b<a", res.headers["x-trace"])
    end)

    it("runs on the loop for a pooled route: next waits for the pool thread", function()
      local res = req("GET", "/pooled")
      assert.are.same(200, res.status)
      assert.are.same({ pooled = true, path = "/pooled" }, res:json())
      assert.are.same("pool", res.headers["x-from"])
      assert.are.same("a>b><b<a", res.headers["x-trace"])
      res = req("GET", "/pooled/fail", { ["x-replace"] = "1" })
      assert.are.same("replaced 500", res.body)
      res = req("GET", "/pooled/7/big", { ["accept-encoding"] = "gzip" })
      assert.are.same("gzip", res.headers["content-encoding"])
    end)

    it("hands a pooled route behind middleware its multipart upload", function()
      local dir = t.tmpdir()
      t.write_file(dir .. "/up.txt", "uploaded bytes")
      local r = t.run({ "-s", "-F", "note=hi", "-F", "file=@" .. dir .. "/up.txt",
                        base .. "/upload/pooled" }, { bin = "curl" })
      assert.are.same({ note = "hi", size = 14, data = "uploaded bytes" },
                      t.json_decode(r.stdout))
    end)

    it("keeps the connection and pipelining working", function()
      local c = assert(t.connect(srv.port))
      assert(c:send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /pooled HTTP/1.1\r\nHost: x\r\n\r\n"
                    .. "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
      local r1, r2, r3 = assert(c:read_response()), assert(c:read_response()),
                         assert(c:read_response())
      c:close()
      assert.are.same({ 200, 200, 404 }, { r1.status, r2.status, r3.status })
    end)
  end)

  describe("cors", function()
    local origin = "https://app.example"

    it("answers a preflight itself, for a path without an OPTIONS route", function()
      local res = req("OPTIONS", "/items", { origin = origin,
        ["access-control-request-method"] = "POST",
        ["access-control-request-headers"] = "x-token, content-type" })
      assert.are.same(200, res.status)
      assert.are.same(origin, res.headers["access-control-allow-origin"])
      assert.are.same("GET, POST", res.headers["access-control-allow-methods"])
      assert.are.same("Accept, Accept-Language, Content-Language, Content-Type, X-Token",
                      res.headers["access-control-allow-headers"])
      assert.are.same("300", res.headers["access-control-max-age"])
      assert.are.same("true", res.headers["access-control-allow-credentials"])
      assert.are.same("Origin", res.headers["vary"])
    end)

    it("refuses a preflight from another origin, method or header with 400", function()
      local res = req("OPTIONS", "/items", { origin = "https://evil.example",
        ["access-control-request-method"] = "DELETE",
        ["access-control-request-headers"] = "x-other" })
      assert.are.same(400, res.status)
      assert.are.same("Disallowed CORS origin, method, headers", res.body)
      assert.is_nil(res.headers["access-control-allow-origin"])
    end)

    it("adds the headers to a simple request from an allowed origin", function()
      local res = req("POST", "/items", { origin = origin }, "x")
      assert.are.same(201, res.status)
      assert.are.same(origin, res.headers["access-control-allow-origin"])
      assert.are.same("true", res.headers["access-control-allow-credentials"])
      assert.are.same("X-Total", res.headers["access-control-expose-headers"])
      res = req("GET", "/headers", { origin = origin })
      assert.are.same("Cookie, Origin", res.headers["vary"])
      assert.are.same("3", res.headers["x-total"])
    end)

    it("leaves other origins and requests without Origin alone", function()
      local res = req("GET", "/hello", { origin = "https://evil.example" })
      assert.are.same(200, res.status)
      assert.is_nil(res.headers["access-control-allow-origin"])
      res = req("GET", "/hello")
      assert.is_nil(res.headers["access-control-allow-origin"])
    end)

    it("passes an OPTIONS request that is not a preflight to the routes", function()
      local res = req("OPTIONS", "/hello", { origin = origin })
      assert.are.same(405, res.status)
      assert.are.same(origin, res.headers["access-control-allow-origin"])
    end)

    it("answers curl's preflight", function()
      local r = t.run({ "-s", "-i", "-X", "OPTIONS", "-H", "Origin: " .. origin,
                        "-H", "Access-Control-Request-Method: GET", base .. "/hello" },
                      { bin = "curl" })
      assert.are.same(0, r.status)
      assert.matches("HTTP/1.1 200", r.stdout, 1, true)
      assert.matches("access%-control%-allow%-origin: https://app%.example", r.stdout:lower())
    end)
  end)

  describe("gzip", function()
    it("compresses a large body for a client that accepts gzip", function()
      local res = req("GET", "/big", { ["accept-encoding"] = "gzip, deflate" })
      assert.are.same(200, res.status)
      assert.are.same("gzip", res.headers["content-encoding"])
      assert.are.same("Accept-Encoding", res.headers["vary"])
      assert.is_true(#res.body < 200)
      assert.are.same(tostring(#res.body), res.headers["content-length"])
      -- Python's zlib reads it back
      local dir = t.tmpdir()
      t.write_file(dir .. "/body.gz", res.body)
      local r = t.run({ "-c", "import gzip,sys; sys.stdout.write(gzip.open(sys.argv[1]).read()"
                        .. ".decode())", dir .. "/body.gz" }, { bin = "python3" })
      assert.are.same(string.rep("moonlet compresses this line. ", 50), r.stdout)
    end)

    it("leaves the body alone without Accept-Encoding (but says Vary)", function()
      local res = req("GET", "/big")
      assert.is_nil(res.headers["content-encoding"])
      assert.are.same("Accept-Encoding", res.headers["vary"])
      assert.are.same(1500, #res.body)
      res = req("GET", "/big", { ["accept-encoding"] = "gzip;q=0, br" })
      assert.is_nil(res.headers["content-encoding"])
    end)

    it("encodes a table body as JSON before compressing", function()
      local res = req("GET", "/big/json", { ["accept-encoding"] = "gzip" })
      assert.are.same("gzip", res.headers["content-encoding"])
      assert.are.same("application/json", res.headers["content-type"])
      local r = t.run({ "-s", "--compressed", base .. "/big/json" }, { bin = "curl" })
      assert.are.same(string.rep("moonlet compresses this line. ", 50),
                      t.json_decode(r.stdout).text)
    end)

    it("skips small bodies and bodies already encoded", function()
      local res = req("GET", "/small", { ["accept-encoding"] = "gzip" })
      assert.is_nil(res.headers["content-encoding"])
      assert.is_nil(res.headers["vary"])
      assert.are.same("tiny", res.body)
      res = req("GET", "/encoded", { ["accept-encoding"] = "gzip" })
      assert.are.same("identity-custom", res.headers["content-encoding"])
      assert.are.same(1500, #res.body)
    end)
  end)

  describe("request_id", function()
    it("generates an id, gives it to the handler, the response and the access log", function()
      local mark = srv:mark()
      local res = req("GET", "/hello")
      local id = res.headers["x-request-id"]
      assert.matches("^%x+$", id)
      assert.are.same(32, #id)
      assert.are.same(id, res:json().request_id)
      assert.truthy(srv:wait_log("GET /hello 200 .* id=" .. id, 5, mark))
      assert.are_not.same(id, req("GET", "/hello").headers["x-request-id"])
    end)

    it("keeps a valid id from the client and replaces an invalid one", function()
      local res = req("GET", "/hello", { ["x-request-id"] = "abc-123" })
      assert.are.same("abc-123", res.headers["x-request-id"])
      res = req("GET", "/hello", { ["x-request-id"] = "bad id\tspaces" })
      assert.matches("^%x+$", res.headers["x-request-id"])
      res = req("GET", "/nope", { ["x-request-id"] = "on-404" })
      assert.are.same("on-404", res.headers["x-request-id"])
    end)
  end)
end)

describe("middleware options", function()
  for _, case in ipairs{
    { "star", "with credentials = true is refused" },
    { "option", "unknown option 'minimum_size'; accepted: level, min_size" },
    { "use", "bad argument #1 to 'use' (expected a function(req, next))" },
    { "origins", "origins is required" },
  } do
    it("refuses to load with a clear error: " .. case[1], function()
      local r = t.run({ "serve", "tests/apps/middleware", "--port", "0" },
                      { env = { MW_BAD = case[1] }, timeout = 10 })
      assert.are.same(2, r.status)
      assert.matches(case[2], r.stderr, 1, true)
    end)
  end
end)
