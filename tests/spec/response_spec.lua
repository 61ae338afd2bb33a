-- What a handler returns becomes the response, the same way for coroutine routes (/co)
-- and pooled routes (/pool): tests/apps/responses. JSON bodies are always valid JSON.
local t = require "moonlet.testing"

local function pct(s)
  return (s:gsub(".", function(c) return string.format("%%%02X", c:byte()) end))
end

local function nested(n, inner)
  return string.rep("[", n) .. inner .. string.rep("]", n)
end

describe("handler results", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/responses", args = { "--pool-size", "2" } }
  end)
  lazy_teardown(function() srv:stop() end)

  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  local function post(path, body)
    return assert(t.request(srv.port, "POST", path, { body = body }))
  end

  for _, kind in ipairs{ "co", "pool" } do
    local p = "/" .. kind

    it(kind .. ": a lone number is the JSON body, never a status", function()
      local res = get(p .. "/lone-number")
      assert.are.same(200, res.status)
      assert.are.same("application/json", res.headers["content-type"])
      assert.are.same("42", res.body)
    end)

    it(kind .. ": a lone nil is 200 without a body", function()
      local res = get(p .. "/lone-nil")
      assert.are.same(200, res.status)
      assert.are.same("", res.body)
    end)

    it(kind .. ": the client cannot pick the status through a JSON body", function()
      for _, body in ipairs{ "404", "260", "204", "99", "600" } do
        local res = post(p .. "/echo", body)
        assert.are.same(200, res.status, body)
        assert.are.same(body, res.body)
      end
    end)

    it(kind .. ": status, nil is a response without a body", function()
      local res = get(p .. "/no-content")
      assert.are.same(204, res.status)
      assert.are.same("", res.body)
      assert.are.same(nil, res.headers["content-length"])
    end)

    it(kind .. ": takes any integer status from 200 to 599", function()
      for _, s in ipairs{ 200, 260, 404, 599 } do
        local res = get(p .. "/status?s=" .. s)
        assert.are.same(s, res.status)
        assert.are.same("x", res.body)
      end
    end)

    it(kind .. ": refuses other statuses with a 500 and a log line", function()
      for _, s in ipairs{ "600", "1000", "99", "100", "-200", "0", "260.5", "abc", "nan" } do
        local mark = srv:mark()
        local res = get(p .. "/status?s=" .. s)
        assert.are.same(500, res.status, s)
        assert.are.same('{"detail":"Internal Server Error"}', res.body)
        srv:wait_log("invalid response status", 5, mark)
      end
      local mark = srv:mark()
      assert.are.same(500, get(p .. "/nil-err").status)
      srv:wait_log("GET " .. p .. "/nil%-err: invalid response status nil", 5, mark)
    end)

    it(kind .. ": refuses headers that are not a table with a 500 and a log line", function()
      local mark = srv:mark()
      assert.are.same(500, get(p .. "/headers-not-table").status)
      srv:wait_log("response headers must be a table, not a string", 5, mark)
    end)

    it(kind .. ": a handler's Date and Server replace moonlet's", function()
      local res = get(p .. "/headers?date=Tue,%2001%20Jan%202030%2000:00:00%20GMT&server=mine")
      assert.are.same({ "Tue, 01 Jan 2030 00:00:00 GMT" }, res:header_values("date"))
      assert.are.same({ "mine" }, res:header_values("server"))
      res = get(p .. "/headers?Server=Mixed")
      assert.are.same({ "Mixed" }, res:header_values("server"))
      assert.are.same(1, #res:header_values("date"))
      res = get(p .. "/headers?x-other=1")
      assert.are.same({ "moonlet" }, res:header_values("server"))
      assert.are.same(1, #res:header_values("date"))
    end)

    it(kind .. ": a handler's Connection: close closes after the whole response", function()
      local c = t.connect(srv.port)
      c:send("GET " .. p .. "/close?n=300000 HTTP/1.1\r\nHost: x\r\n\r\n" ..
             "GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(c:read_response(10))
      assert.are.same(200, res.status)
      assert.are.same(300000, #res.body)
      assert.are.same({ "close" }, res:header_values("connection"))
      assert.is_truthy(c:is_closed(5), "connection left open after the handler's Connection: close")
      assert.are.same("", c.buf, "the request after the close was answered")
      c:close()
      c = t.connect(srv.port)
      c:send("GET " .. p .. "/close?c=Keep-Alive,%20CLOSE HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.same("bbb", assert(c:read_response(5)).body)
      assert.is_truthy(c:is_closed(5), "Connection: close in a token list left the connection open")
      c:close()
    end)

    it(kind .. ": other Connection values from a handler are not sent and keep it open", function()
      local c = t.connect(srv.port)
      c:send("GET " .. p .. "/close?c=keep-alive HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(c:read_response(5))
      assert.are.same(nil, res.headers["connection"])
      c:send("GET /text HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.are.same("plain", assert(c:read_response(5)).body)
      c:close()
    end)

    it(kind .. ": req decodes path, params, query and headers", function()
      local c = t.connect(srv.port)
      c:send("GET " .. p .. "/req/a%20b%2Fc/007?x=1&x=2&y=%41+b%2B&z&&=v HTTP/1.1\r\n" ..
             "Host: x\r\nX-Rep: one\r\nCookie: a=1\r\nX-Rep: two\r\nCookie: b=2\r\n\r\n")
      local res = assert(c:read_response(5)):json()
      c:close()
      res.fields = nil
      assert.are.same({ method = "GET", path = p .. "/req/a b/c/007", params = { name = "a b/c", n = 7 },
                url = p .. "/req/a%20b%2Fc/007?x=1&x=2&y=%41+b%2B&z&&=v",
                query = { x = { "1", "2" }, y = "A b+", z = "", [""] = "v" },
                rep = "one, two", cookie = "a=1; b=2", body = "" }, res)
      assert.are.same({ a = { "1", "2", "3" }, b = "  c", d = "" },
                      post(p .. "/form", "a=1&a=2&a=3&b=%20+c&d"):json())
    end)

    it(kind .. ": req:header reads one header without making req.headers", function()
      local c = t.connect(srv.port)
      c:send("GET " .. p .. "/header HTTP/1.1\r\nHost: x\r\nX-Rep: one\r\nCookie: a=1\r\n" ..
             "X-Rep: two\r\nCookie: b=2\r\n\r\n")
      local res = assert(c:read_response(5)):json()
      c:close()
      assert.are.same({ rep = "one, two", cookie = "a=1; b=2", none = "absent", one = "x",
                        built = false }, res)
    end)

    it(kind .. ": a req kept past its request can no longer read its headers", function()
      local r
      for _ = 1, 5 do   -- the first request in each Lua state only keeps its req
        r = get(p .. "/kept"):json()
        if not r.first then break end
      end
      assert.are.same(false, r.ok)
      assert.matches("this request is finished", r.err)
    end)

    it(kind .. ": {id:int} is a number held exactly, or 404", function()
      assert.are.same('{"id":-9007199254740992}', get(p .. "/items/-9007199254740992").body)
      assert.are.same('{"id":12}', get(p .. "/items/0012").body)
      assert.are.same(404, get(p .. "/items/9007199254740993").status)
      assert.are.same(404, get(p .. "/items/100000000000000000000").status)
    end)
  end

  it("req holds the same fields on both kinds of route before any is read", function()
    local fields = get("/co/req/x/1"):json().fields
    assert.are.same(fields, get("/pool/req/x/1"):json().fields)
    local list = " " .. table.concat(fields, " ") .. " "
    for _, f in ipairs{ "body:string", "method:string", "params:table", "path:string" } do
      assert.is_truthy(list:find(" " .. f .. " ", 1, true), f .. " missing from" .. list)
    end
  end)

  it("a Connection: close answer also closes with curl", function()
    local base = "http://127.0.0.1:" .. srv.port
    local out = t.run({ "-sv", base .. "/co/close", base .. "/text" }, { bin = "curl" })
    assert.matches("< Connection: close", out.stderr)
    assert.matches("Closing connection", out.stderr)
    assert.are.same("bbbplain", out.stdout)
  end)

  describe("JSON", function()
    -- bodies cjson alone would take, and a few it refuses too
    local invalid = {
      "0x10", "nan", "NaN", "-nan", "inf", "Infinity", "-Infinity", "1e400", "-1e400",
      "[1e999]", '{"a":1e309}', "01", "-01", "+1", "1.", ".5", "1e", "-", '"a\1b"',
      '"tab\there"', '"\255"', '"\192\175"', '"\237\160\128"', '"\244\144\128\128"', '"\226\130"',
      '["\\x"]', '"\\u12"', '"\\ud800"', "[1,]", '{"a":1,}', "", " ", "1 2", "\239\187\191{}",
      "[1]x", "tru", "nul", "{'a':1}", '{"a" 1}', '{"a":1 "b":2}', "[\f1]", '"unterminated',
      nested(129, "1"), string.rep('{"a":', 129) .. "1" .. string.rep("}", 129),
    }
    -- body sent -> body echoed
    local valid = {
      { "0", "0" }, { "-0.5", "-0.5" }, { "1E2", "100" }, { "1e-400", "0" },
      { " [1.5, -2, true, false, null] ", "[1.5,-2,true,false,null]" },
      { '["\\u00e9\\ud83d\\ude00 \\"\\/"]', '["\195\169\240\159\152\128 \\"/"]' },
      { '["\195\169\240\159\152\128"]', '["\195\169\240\159\152\128"]' },
      { nested(128, "1"), nested(128, "1") },
      { '{"a":{"b":[1,{"c":null}]}}', '{"a":{"b":[1,{"c":null}]}}' },
    }

    for _, kind in ipairs{ "co", "pool" } do
      local p = "/" .. kind

      it(kind .. ": req:json() answers 400 to anything RFC 8259 does not allow", function()
        for _, body in ipairs(invalid) do
          local res = post(p .. "/echo", body)
          assert.are.same(400, res.status, body:sub(1, 40))
          assert.are.same('{"detail":"Invalid JSON body"}', res.body)
        end
      end)

      it(kind .. ": req:json() takes strict JSON and it encodes back", function()
        for _, case in ipairs(valid) do
          local res = post(p .. "/echo", case[1])
          assert.are.same(200, res.status, case[1]:sub(1, 40))
          assert.are.same(case[2], res.body)
        end
      end)

      it(kind .. ": moonlet.json.decode and the client's res:json() are as strict", function()
        assert.are.same({ ok = false, err = "invalid json at byte 4: unexpected character" },
                        post(p .. "/decode", "[1,nan]"):json())
        assert.are.same({ ok = true }, post(p .. "/decode", '{"a":[1]}'):json())
        assert.are.same({ ok = false, err = "invalid json at byte 2: unexpected character after the value" },
                        post(p .. "/client-json", "0x10"):json())
        assert.are.same({ ok = true }, post(p .. "/client-json", "[1]"):json())
      end)

      it(kind .. ": invalid UTF-8 is encoded as U+FFFD, one per bad byte", function()
        local good = "\240\159\152\128 \239\191\189 h\195\169"   -- U+1F600 U+FFFD U+00E9
        local cases = {
          { "a\255b", "a\\ufffdb" },
          { "\128", "\\ufffd" },
          { "\226\130", "\\ufffd\\ufffd" },                      -- cut short
          { "\192\175", "\\ufffd\\ufffd" },                      -- overlong '/'
          { "\237\160\128", "\\ufffd\\ufffd\\ufffd" },           -- a surrogate
          { "\244\144\128\128", "\\ufffd\\ufffd\\ufffd\\ufffd" }, -- above U+10FFFF
          { good, good },
        }
        for _, case in ipairs(cases) do
          assert.are.same('["' .. case[2] .. '"]', get(p .. "/utf8?s=" .. pct(case[1])).body)
          assert.are.same('{"' .. case[2] .. '":1}', get(p .. "/utf8-key?s=" .. pct(case[1])).body)
        end
      end)

      it(kind .. ": moonlet.array keeps holes as null up to its largest index or its n", function()
        local cases = {
          { "hole", "[null,5]" }, { "holes", "[1,null,null,4]" }, { "length", "[5,null,null]" },
          { "n", "[7,null]" }, { "empty", "[]" }, { "encode", '{"s":"[null,\\"x\\"]"}' },
          { "plain", '{"plain_hole":{"2":5}}' },
        }
        for _, case in ipairs(cases) do
          local res = get(p .. "/array?kind=" .. case[1])
          assert.are.same(200, res.status, case[1])
          assert.are.same(case[2], res.body, case[1])
        end
      end)

      it(kind .. ": moonlet.array refuses what cannot be a list (500 and a log line)", function()
        for _, case in ipairs{ { "sparse", "too sparse" }, { "keys", "key \"name\"" },
                               { "beyond", "key 3 beyond its length n" } } do
          local mark = srv:mark()
          assert.are.same(500, get(p .. "/array?kind=" .. case[1]).status, case[1])
          srv:wait_log("moonlet%.array.*" .. case[2]:gsub("%p", "%%%0"), 5, mark)
        end
      end)
    end
  end)
end)
