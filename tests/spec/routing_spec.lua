-- Routing, requests and responses through the real binary (tests/apps/basic).
local t = require "moonlet.testing"

describe("routing and the request/response API", function()
  local srv
  local function get(path, opts) return assert(t.request(srv.port, "GET", path, opts)) end

  before_all(function() srv = t.server{ app = "tests/apps/basic" } end)
  after_all(function() srv:stop() end)

  it("answers a table with JSON", function()
    local res = get("/")
    eq(res.status, 200)
    eq(res.headers["content-type"], "application/json")
    eq(res.body, '{"root":true}')
  end)

  it("passes {id:int} as a number and 404s a non-integer", function()
    local res = assert(t.request(srv.port, "DELETE", "/items/42"))
    eq(res:json(), { deleted = 42 })
    eq(assert(t.request(srv.port, "DELETE", "/items/4x2")).status, 404)
  end)

  it("404s an unknown path with the FastAPI body", function()
    local res = get("/nope")
    eq(res.status, 404)
    eq(res.body, '{"detail":"Not Found"}')
  end)

  it("405s a known path with the wrong method, with Allow", function()
    local res = assert(t.request(srv.port, "POST", "/text"))
    eq(res.status, 405)
    eq(res.body, '{"detail":"Method Not Allowed"}')
    eq(res.headers["allow"], "GET, HEAD")
  end)

  it("405s a method no route has (TRACE, PROPFIND) on a known path, with Allow; 404 elsewhere", function()
    for _, method in ipairs({ "TRACE", "PROPFIND" }) do
      local res = assert(t.request(srv.port, method, "/method"))
      eq(res.status, 405)
      eq(res.body, '{"detail":"Method Not Allowed"}')
      eq(res.headers["allow"], "GET, HEAD, POST")
      eq(assert(t.request(srv.port, method, "/users/ann")).headers["allow"], "GET, HEAD")
      eq(assert(t.request(srv.port, method, "/nope")).status, 404)
    end
  end)

  it("answers HEAD from the GET route without a body", function()
    local c = t.connect(srv.port)
    c:send("HEAD /text HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(5, { head = true }))
    eq(res.status, 200)
    eq(res.headers["content-length"], "10")
    eq(res.body, "")
    -- the connection is still in sync: the next response parses
    c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    eq(assert(c:read_response(5)).body, "plain text")
    c:close()
  end)

  it("routes methods given as a list", function()
    eq(get("/method"):json(), { method = "GET" })
    eq(assert(t.request(srv.port, "POST", "/method")):json(), { method = "POST" })
  end)

  it("finds routes defined in APPDIR modules (require)", function()
    eq(get("/users/ann"):json(), { user = "ann" })
  end)

  it("percent-decodes path params and req.path", function()
    eq(get("/path/a%20b"):json(), { rest = "a b", path = "/path/a b" })
  end)

  it("percent-decodes the query; repeated keys become a list", function()
    eq(get("/query?q=a%20b&x=1+2&tag=a&tag=b&empty="):json(),
       { q = "a b", x = "1 2", tag = { "a", "b" }, empty = "" })
  end)

  it("gives headers with lower-case names", function()
    local res = get("/headers", { headers = { ["X-Custom-Thing"] = "v1" } })
    local h = res:json()
    eq(h["x-custom-thing"], "v1")
    eq(h["host"] ~= nil, true)
  end)

  it("answers a string as text/plain", function()
    local res = get("/text")
    eq(res.headers["content-type"], "text/plain; charset=utf-8")
    eq(res.body, "plain text")
  end)

  it("takes status, body and headers from a handler", function()
    local res = get("/status")
    eq(res.status, 201)
    eq(res.headers["x-extra"], "1")
    eq(res:json(), { created = true })
  end)

  it("sends no body for 204", function()
    local res = get("/nobody")
    eq(res.status, 204)
    eq(res.body, "")
    eq(res.headers["content-length"], nil)
  end)

  it("honours moonlet.response{} and a content-type override", function()
    local res = get("/response")
    eq(res.status, 202)
    eq(res.headers["content-type"], "text/csv")
    eq(res.body, "a,b\n")
  end)

  it("sends a header once per list item", function()
    local res = get("/multi-header")
    eq(res:header_values("set-cookie"), { "a=1", "b=2" })
  end)

  it("encodes moonlet.array{} as [] and {} as {}", function()
    local body = get("/empty-list").body
    match(body, '"items":%[%]')
    match(body, '"obj":{}')
  end)

  it("encodes strings and numbers exactly", function()
    eq(get("/unicode").body, '{"s":"h\195\169llo \\"q\\" \\\\ / \\n\\t\\u0001"}')
    local n = get("/numbers"):json()
    eq(n, { i = 42, neg = -7, f = 0.1, big = 2^53, small = 1e-7 })
    match(get("/numbers").body, '"f":0%.1[,}]')
  end)

  it("turns moonlet.http_error into its status and detail", function()
    local res = get("/teapot")
    eq(res.status, 418)
    eq(res.body, "{\"detail\":\"I'm a teapot\"}")
    res = get("/notfound")
    eq(res.status, 404)
    eq(res:json(), { detail = "Item not found" })
    eq(res.headers["x-why"], "missing")
  end)

  it("gives moonlet.http_error without a detail the status's reason phrase", function()
    for status, detail in pairs{ [404] = "Not Found", [409] = "Conflict",
                                 [503] = "Service Unavailable", [499] = "Client Error" } do
      local res = get("/http-error/" .. status)
      eq(res.status, status)
      eq(res.body, '{"detail":"' .. detail .. '"}')
    end
    local res = get("/http-error-table")
    eq(res.status, 422)
    eq(res:json(), { detail = { { loc = { "query", "n" }, msg = "not a number" } } })
  end)

  it("answers 500 on a Lua error, logs a traceback with file:line, keeps serving", function()
    local res = get("/boom")
    eq(res.status, 500)
    eq(res.body, '{"detail":"Internal Server Error"}')
    local _, at = srv:wait_log("GET /boom: tests/apps/basic/app%.lua:%d+: attempt to index", 5)
    srv:wait_log("^stack traceback:$", 5, at)
    -- the handler's own frame, first
    srv:wait_log("^%s+tests/apps/basic/app%.lua:%d+: in function <tests/apps/basic/app%.lua:%d+>$",
                 5, at)
    eq(get("/").status, 200)
  end)

  it("answers 500 for an error after a sleep", function()
    eq(get("/sleep-then-boom").status, 500)
    srv:wait_log("late failure", 5)
  end)

  it("refuses a response header with CR/LF (500, never on the wire)", function()
    local res = get("/bad-header")
    eq(res.status, 500)
    eq(res.headers["set-cookie"], nil)
    ok(not res.raw:find("pwned", 1, true), "injected header reached the wire")
    srv:wait_log("CR, LF", 5)
    eq(get("/bad-header-name").status, 500)
  end)

  it("answers 500 for a bad status or a value JSON cannot hold", function()
    eq(get("/bad-status").status, 500)
    eq(get("/nan").status, 500)
    srv:wait_log("NaN", 5)
  end)

  it("answers 500 when a handler yields on its own", function()
    eq(get("/yield").status, 500)
    srv:wait_log("yielded outside a moonlet primitive", 5)
  end)

  it("parses JSON bodies and 400s invalid ones", function()
    local res = assert(t.request(srv.port, "POST", "/json", { body = '{"a":[1,2,{"b":null}]}' }))
    eq(res.status, 200)
    eq(res.body, '{"a":[1,2,{"b":null}]}')
    res = assert(t.request(srv.port, "POST", "/json", { body = "{nope" }))
    eq(res.status, 400)
    eq(res.body, '{"detail":"Invalid JSON body"}')
  end)

  it("parses urlencoded forms", function()
    local res = assert(t.request(srv.port, "POST", "/form", {
      body = "username=ann+b&x=%26&x=2",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" } }))
    eq(res:json(), { username = "ann b", x = { "&", "2" } })
  end)

  it("writes an access log line with method, path, status and ms", function()
    get("/text?x=1")
    srv:wait_log("GET /text 200 [%d%.]+ms", 5)
  end)
end)
