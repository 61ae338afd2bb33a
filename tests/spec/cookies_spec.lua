-- req.cookies and moonlet.cookie through the real binary (tests/apps/cookies), for both
-- kinds of route, with raw Cookie headers and with curl's cookie jar.
local t = require "moonlet.testing"

describe("cookies", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/cookies" } end)
  lazy_teardown(function() srv:stop() end)

  local function with_cookies(path, ...)
    local c = t.connect(srv.port)
    local head = "GET " .. path .. " HTTP/1.1\r\nHost: x\r\n"
    for _, line in ipairs{ ... } do head = head .. "Cookie: " .. line .. "\r\n" end
    c:send(head .. "\r\n")
    local res = assert(c:read_response(5))
    c:close()
    return res
  end

  for _, kind in ipairs{ "co", "pool" } do
    local p = "/" .. kind

    it(kind .. ": req.cookies parses every Cookie header", function()
      local res = with_cookies(p .. "/cookies", "a=1; b=two words", "c=\"quoted\";d=")
      assert.are.same(200, res.status)
      assert.are.same({ a = "1", b = "two words", c = "quoted", d = "" }, res:json())
    end)

    it(kind .. ": req.cookies keeps the first of a repeated name and skips broken pairs",
       function()
      local res = with_cookies(p .. "/cookies", "id=first; junk; =nameless; id=second",
                               "  sp = x ;;")
      assert.are.same({ id = "first", sp = "x" }, res:json())
    end)

    it(kind .. ": req.cookies is empty without a Cookie header", function()
      assert.are.same("{}", with_cookies(p .. "/cookies").body)
    end)

    it(kind .. ": moonlet.cookie builds Set-Cookie with Path=/ and SameSite=Lax by default",
       function()
      local res = assert(t.request(srv.port, "GET", p .. "/set?name=sid&value=abc"))
      assert.are.same("sid=abc; Path=/; SameSite=Lax", res.headers["set-cookie"])
      res = assert(t.request(srv.port, "GET", p .. "/set?name=sid&value=abc&max_age=60"
                             .. "&path=/app&domain=example.com&secure=1&http_only=1"
                             .. "&same_site=strict&expires=0"))
      assert.are.same("sid=abc; Max-Age=60; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                      .. "Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Strict",
                      res.headers["set-cookie"])
    end)

    it(kind .. ": moonlet.cookie leaves Path and SameSite out when told; two at once", function()
      local c = t.connect(srv.port)
      c:send("GET " .. p .. "/set-bare HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(c:read_response(5))
      c:close()
      assert.are.same(204, res.status)
      assert.are.same({ "a=1", "b=2; Path=/; SameSite=Lax" }, res:header_values("set-cookie"))
    end)

    it(kind .. ": moonlet.cookie refuses what would break the header", function()
      for _, case in ipairs{
        { "name=a%20b&value=1", "a cookie name is a token" },
        { "name=&value=1", "not empty" },
        { "name=a&value=x%3By", "no control characters and no ';'" },
        { "name=a&value=x%0D%0ASet-Cookie:%20evil=1", "no control characters" },
        { "name=a&value=1&path=/x%3B%20Domain=evil", "path has no" },
        { "name=a&value=1&same_site=sideways", "same_site is" },
        { "name=a&value=1&same_site=none", "needs secure = true" },
      } do
        local res = assert(t.request(srv.port, "GET", p .. "/set?" .. case[1]))
        assert.are.same(400, res.status, case[1])
        assert.matches(case[2], res:json().error, 1, true)
        assert.is_nil(res.headers["set-cookie"], case[1])
      end
      local res = assert(t.request(srv.port, "GET", p .. "/set?name=a&value=1"
                                   .. "&same_site=none&secure=1"))
      assert.are.same("a=1; Path=/; Secure; SameSite=None", res.headers["set-cookie"])
    end)
  end

  it("curl keeps what moonlet.cookie sets and sends it back to req.cookies", function()
    local jar = t.tmpdir() .. "/jar"
    local base = "http://127.0.0.1:" .. srv.port
    local set = t.run({ "-s", "-c", jar, base .. "/co/set?name=token&value=s3cr3t&http_only=1" },
                      { bin = "curl" })
    assert.are.same(0, set.status, set.stderr)
    local back = t.run({ "-s", "-b", jar, base .. "/pool/cookies" }, { bin = "curl" })
    assert.are.same(0, back.status, back.stderr)
    assert.are.same('{"token":"s3cr3t"}', back.stdout)
  end)
end)
