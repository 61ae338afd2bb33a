-- Routing, requests and responses through the real binary (tests/apps/basic).
local t = require "moonlet.testing"

describe("routing and the request/response API", function()
  local srv
  local function get(path, opts) return assert(t.request(srv.port, "GET", path, opts)) end

  lazy_setup(function() srv = t.server{ app = "tests/apps/basic" } end)
  lazy_teardown(function() srv:stop() end)

  it("answers a table with JSON", function()
    local res = get("/")
    assert.are.same(200, res.status)
    assert.are.same("application/json", res.headers["content-type"])
    assert.are.same('{"root":true}', res.body)
  end)

  it("passes {id:int} as a number and 404s a non-integer", function()
    local res = assert(t.request(srv.port, "DELETE", "/items/42"))
    assert.are.same({ deleted = 42 }, res:json())
    assert.are.same(404, assert(t.request(srv.port, "DELETE", "/items/4x2")).status)
  end)

  it("404s an unknown path with the FastAPI body", function()
    local res = get("/nope")
    assert.are.same(404, res.status)
    assert.are.same('{"detail":"Not Found"}', res.body)
  end)

  it("405s a known path with the wrong method, with Allow", function()
    local res = assert(t.request(srv.port, "POST", "/text"))
    assert.are.same(405, res.status)
    assert.are.same('{"detail":"Method Not Allowed"}', res.body)
    assert.are.same("GET, HEAD", res.headers["allow"])
  end)

  it("405s a method no route has (TRACE, PROPFIND) on a known path, with Allow; 404 elsewhere", function()
    for _, method in ipairs({ "TRACE", "PROPFIND" }) do
      local res = assert(t.request(srv.port, method, "/method"))
      assert.are.same(405, res.status)
      assert.are.same('{"detail":"Method Not Allowed"}', res.body)
      assert.are.same("GET, HEAD, POST", res.headers["allow"])
      assert.are.same("GET, HEAD",
                      assert(t.request(srv.port, method, "/users/ann")).headers["allow"])
      assert.are.same(404, assert(t.request(srv.port, method, "/nope")).status)
    end
  end)

  it("answers HEAD from the GET route without a body", function()
    local c = t.connect(srv.port)
    c:send("HEAD /text HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(5, { head = true }))
    assert.are.same(200, res.status)
    assert.are.same("10", res.headers["content-length"])
    assert.are.same("", res.body)
    -- the connection is still in sync: the next response parses
    c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
    assert.are.same("plain text", assert(c:read_response(5)).body)
    c:close()
  end)

  it("routes methods given as a list", function()
    assert.are.same({ method = "GET" }, get("/method"):json())
    assert.are.same({ method = "POST" }, assert(t.request(srv.port, "POST", "/method")):json())
  end)

  it("finds routes defined in APPDIR modules (require)", function()
    assert.are.same({ user = "ann" }, get("/users/ann"):json())
  end)

  it("percent-decodes path params and req.path", function()
    assert.are.same({ rest = "a b", path = "/path/a b" }, get("/path/a%20b"):json())
  end)

  it("percent-decodes the query; repeated keys become a list", function()
    assert.are.same({ q = "a b", x = "1 2", tag = { "a", "b" }, empty = "" },
                    get("/query?q=a%20b&x=1+2&tag=a&tag=b&empty="):json())
  end)

  it("gives headers with lower-case names", function()
    local res = get("/headers", { headers = { ["X-Custom-Thing"] = "v1" } })
    local h = res:json()
    assert.are.same("v1", h["x-custom-thing"])
    assert.are.same(true, h["host"] ~= nil)
  end)

  it("answers a string as text/plain", function()
    local res = get("/text")
    assert.are.same("text/plain; charset=utf-8", res.headers["content-type"])
    assert.are.same("plain text", res.body)
  end)

  it("takes status, body and headers from a handler", function()
    local res = get("/status")
    assert.are.same(201, res.status)
    assert.are.same("1", res.headers["x-extra"])
    assert.are.same({ created = true }, res:json())
  end)

  it("sends no body for 204", function()
    local res = get("/nobody")
    assert.are.same(204, res.status)
    assert.are.same("", res.body)
    assert.are.same(nil, res.headers["content-length"])
  end)

  it("honours moonlet.response{} and a content-type override", function()
    local res = get("/response")
    assert.are.same(202, res.status)
    assert.are.same("text/csv", res.headers["content-type"])
    assert.are.same("a,b\n", res.body)
  end)

  it("sends a header once per list item", function()
    local res = get("/multi-header")
    assert.are.same({ "a=1", "b=2" }, res:header_values("set-cookie"))
  end)

  it("encodes moonlet.array{} as [] and {} as {}", function()
    local body = get("/empty-list").body
    assert.matches('"items":%[%]', body)
    assert.matches('"obj":{}', body)
  end)

  it("encodes strings and numbers exactly", function()
    assert.are.same('{"s":"h\195\169llo \\"q\\" \\\\ / \\n\\t\\u0001"}', get("/unicode").body)
    local n = get("/numbers"):json()
    assert.are.same({ i = 42, neg = -7, f = 0.1, big = 2^53, small = 1e-7 }, n)
    assert.matches('"f":0%.1[,}]', get("/numbers").body)
  end)

  it("turns moonlet.http_error into its status and detail", function()
    local res = get("/teapot")
    assert.are.same(418, res.status)
    assert.are.same("{\"detail\":\"I'm a teapot\"}", res.body)
    res = get("/notfound")
    assert.are.same(404, res.status)
    assert.are.same({ detail = "Item not found" }, res:json())
    assert.are.same("missing", res.headers["x-why"])
  end)

  it("gives moonlet.http_error without a detail the status's reason phrase", function()
    for status, detail in pairs{ [404] = "Not Found", [409] = "Conflict",
                                 [503] = "Service Unavailable", [499] = "Client Error" } do
      local res = get("/http-error/" .. status)
      assert.are.same(status, res.status)
      assert.are.same('{"detail":"' .. detail .. '"}', res.body)
    end
    local res = get("/http-error-table")
    assert.are.same(422, res.status)
    assert.are.same({ detail = { { loc = { "query", "n" }, msg = "not a number" } } }, res:json())
  end)

  it("answers 500 on a Lua error, logs a traceback with file:line, keeps serving", function()
    local res = get("/boom")
    assert.are.same(500, res.status)
    assert.are.same('{"detail":"Internal Server Error"}', res.body)
    local _, at = srv:wait_log("GET /boom: tests/apps/basic/app%.lua:%d+: attempt to index", 5)
    srv:wait_log("^stack traceback:$", 5, at)
    -- the handler's own frame, first
    srv:wait_log("^%s+tests/apps/basic/app%.lua:%d+: in function <tests/apps/basic/app%.lua:%d+>$",
                 5, at)
    assert.are.same(200, get("/").status)
  end)

  it("answers 500 for an error after a sleep", function()
    assert.are.same(500, get("/sleep-then-boom").status)
    srv:wait_log("late failure", 5)
  end)

  it("refuses a response header with CR/LF (500, never on the wire)", function()
    local res = get("/bad-header")
    assert.are.same(500, res.status)
    assert.are.same(nil, res.headers["set-cookie"])
    assert.is_truthy(not res.raw:find("pwned", 1, true), "injected header reached the wire")
    srv:wait_log("CR, LF", 5)
    assert.are.same(500, get("/bad-header-name").status)
    assert.are.same(500, get("/bad-header-ctl").status)   -- a form feed (found by fuzz/request)
    local tab = get("/header-tab")
    assert.are.same({ 200, "a\tb" }, { tab.status, tab.headers["x-tab"] })
  end)

  it("answers 500 for a bad status or a value JSON cannot hold", function()
    assert.are.same(500, get("/bad-status").status)
    assert.are.same(500, get("/nan").status)
    srv:wait_log("NaN", 5)
  end)

  it("answers 500 when a handler yields on its own", function()
    assert.are.same(500, get("/yield").status)
    srv:wait_log("yielded outside a moonlet primitive", 5)
  end)

  it("parses JSON bodies and 400s invalid ones", function()
    local res = assert(t.request(srv.port, "POST", "/json", { body = '{"a":[1,2,{"b":null}]}' }))
    assert.are.same(200, res.status)
    assert.are.same('{"a":[1,2,{"b":null}]}', res.body)
    res = assert(t.request(srv.port, "POST", "/json", { body = "{nope" }))
    assert.are.same(400, res.status)
    assert.are.same('{"detail":"Invalid JSON body"}', res.body)
  end)

  it("parses urlencoded forms", function()
    local res = assert(t.request(srv.port, "POST", "/form", {
      body = "username=ann+b&x=%26&x=2",
      headers = { ["content-type"] = "application/x-www-form-urlencoded" } }))
    assert.are.same({ username = "ann b", x = { "&", "2" } }, res:json())
  end)

  it("writes an access log line with method, path, status and ms", function()
    get("/text?x=1")
    srv:wait_log("GET /text 200 [%d%.]+ms", 5)
  end)

  it("logs moonlet.log lines at the levels --log-level lets through", function()
    local mark = srv:mark()
    assert.are.same(200, get("/log?id=77").status)
    srv:wait_log("^%d+%-%d+%-%d+T[%d:.]+Z error log%-spec error 77$", 5, mark)
    local text = srv:stderr():sub(mark + 1)
    assert.matches("Z info  log%-spec info 77\n", text)
    assert.matches("Z warn  log%-spec warn 77\n", text)
    assert.is_nil(text:find("log-spec debug", 1, true))
  end)
end)
