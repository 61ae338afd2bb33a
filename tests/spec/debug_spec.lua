-- Development mode's error pages (`moonlet serve --debug`, `--reload`; the test client's
-- { debug = true }): a 500 for a Lua error carries the error and its traceback, as HTML for
-- a client that accepts text/html (curl, and Python's html.parser reading what it got),
-- as JSON otherwise (raw requests); never without those flags. tests/apps/debug.
local t = require "moonlet.testing"

local APP = "tests/apps/debug"
local TB_LINE = "^tests/apps/debug/app%.lua:%d+: in function"

-- Python's own HTML parser: the start tags of the page (name and attribute names), one a
-- line, then the text it holds, so an injected tag or an external asset shows.
local PARSE = [[
import sys
from html.parser import HTMLParser
class P(HTMLParser):
    text = []
    def handle_starttag(self, tag, attrs):
        print("tag", tag, " ".join(a for a, _ in attrs))
    def handle_data(self, d):
        self.text.append(d)
p = P()
p.feed(open(sys.argv[1], encoding="utf-8").read())
print("text", "".join(p.text).replace("\n", " "))
]]

-- GET path through curl with a browser's Accept: status, content type, parse (tags, text).
local function browser_get(port, path)
  local dir = t.tmpdir()
  local file = dir .. "/page.html"
  local out = t.run({ "-s", "-o", file, "-w", "%{http_code} %{content_type}",
                      "-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8",
                      "http://127.0.0.1:" .. port .. path }, { bin = "curl" })
  assert.are.same(0, out.status, out.stderr)
  local status, ctype = out.stdout:match("^(%d+) (.*)$")
  local parsed = t.run({ "-c", PARSE, file }, { bin = "/usr/bin/python3" })
  assert.are.same(0, parsed.status, parsed.stderr)
  local tags, text = {}, parsed.stdout:match("\ntext (.*)\n$") or ""
  for name, attrs in parsed.stdout:gmatch("tag (%S+) ?([^\n]*)") do
    tags[#tags + 1] = { name = name, attrs = attrs }
  end
  return tonumber(status), ctype, tags, text, t.read_file(file)
end

local configs = {
  { name = "--debug", args = { "--debug" }, dev = true },
  { name = "--debug, behind middleware", args = { "--debug" }, env = { DEBUG_APP_MW = "1" },
    dev = true, mw = true },
  { name = "--reload", args = { "--reload" }, dev = true },
  { name = "no flag", args = {}, dev = false },
  { name = "no flag, behind middleware", args = {}, env = { DEBUG_APP_MW = "1" }, dev = false,
    mw = true },
}

for _, cfg in ipairs(configs) do
  describe("error pages (" .. cfg.name .. ")", function()
    local srv
    lazy_setup(function()
      local args = { "--pool-size", "2" }
      for _, a in ipairs(cfg.args) do args[#args + 1] = a end
      srv = t.server{ app = APP, args = args, env = cfg.env }
    end)
    lazy_teardown(function() srv:stop() end)

    local function get(path, headers)
      return assert(t.request(srv.port, "GET", path, { headers = headers }))
    end

    -- path's 500 in development mode: JSON for a raw request, HTML for curl as a browser,
    -- both holding `text`; returns the JSON
    local function assert_dev(path, text)
      local res = get(path)
      assert.are.same(500, res.status, path)
      local body = res:json()
      assert.is_truthy(body.detail:find(text, 1, true), body.detail)
      local status, ctype, _, page = browser_get(srv.port, path)
      assert.are.same(500, status, path)
      assert.are.same("text/html; charset=utf-8", ctype, path)
      assert.is_truthy(page:find(text, 1, true), page)
      return body, res.body
    end

    -- the 500 every error answers outside development mode, whatever the client accepts
    local function assert_plain(path, headers)
      local res = get(path, headers)
      assert.are.same(500, res.status, path)
      assert.are.same('{"detail":"Internal Server Error"}', res.body, path)
      assert.are.same("application/json", res.headers["content-type"], path)
    end

    for _, kind in ipairs{ "c", "p" } do
      local what = kind == "c" and "coroutine route" or "pooled route"
      local p = "/" .. kind

      if cfg.dev then
        it(what .. ": a handler's error as JSON: its message and traceback", function()
          local mark = srv:mark()
          local res = get(p .. "/boom")
          assert.are.same(500, res.status)
          assert.are.same("application/json", res.headers["content-type"])
          assert.is_truthy(res.body:find('^{"detail":'), res.body)   -- detail first
          local body = res:json()
          assert.is_truthy(body.detail:find(
            "^tests/apps/debug/app%.lua:%d+: attempt to index local 't' %(a nil value%)$"),
            body.detail)
          assert.are.same("table", type(body.traceback))
          assert.is_truthy(#body.traceback >= 1)
          assert.is_truthy(body.traceback[1]:find(TB_LINE), body.traceback[1])
          srv:wait_log("GET " .. p .. "/boom: tests/apps/debug/app%.lua:%d+: attempt", 5, mark)
        end)

        it(what .. ": a handler's error as an HTML page for a browser, escaped", function()
          local status, ctype, tags, text, html = browser_get(srv.port, p .. "/script")
          assert.are.same(500, status)
          assert.are.same("text/html; charset=utf-8", ctype)
          for _, tag in ipairs(tags) do
            assert.are_not.same("script", tag.name, "the message injected a tag")
            assert.is_falsy(tag.attrs:find("src") or tag.attrs:find("href"),
                            "an external asset: " .. tag.name .. " " .. tag.attrs)
          end
          assert.is_truthy(text:find("GET " .. p .. "/script", 1, true), text)
          assert.is_truthy(text:find(
            "app.lua:34: <script>alert('x')</script> & \"quoted\"", 1, true), text)
          assert.is_truthy(text:find("tests/apps/debug/app.lua:34: in function", 1, true), text)
          assert.is_truthy(html:find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;", 1, true))
          assert.is_falsy(html:find("<script", 1, true))
        end)

        it(what .. ": a dependency's error", function()
          local body = assert_dev(p .. "/dep", "attempt to index local")
          assert.is_truthy(body.detail:find("attempt to index local 'cfg'", 1, true))
          assert.is_truthy(body.traceback[1]:find(TB_LINE), body.traceback[1])
        end)

        it(what .. ": a response that cannot be serialized (no traceback)", function()
          local body, raw = assert_dev(p .. "/unserializable", "function")
          assert.is_falsy(body.detail:find("Internal Server Error", 1, true))
          assert.is_truthy(raw:find('"traceback":[]', 1, true), raw)
        end)

        it(what .. ": HEAD gets the 500 without a body", function()
          local res = assert(t.request(srv.port, "HEAD", p .. "/boom"))
          assert.are.same(500, res.status)
          assert.are.same("", res.body)
        end)
      else
        it(what .. ": every error is the plain 500, the traceback in the log only", function()
          for _, path in ipairs{ "/boom", "/script", "/dep", "/unserializable" } do
            assert_plain(p .. path)
            assert_plain(p .. path, { accept = "text/html" })
          end
          local status, ctype, _, _, body = browser_get(srv.port, p .. "/boom")
          assert.are.same(500, status)
          assert.are.same("application/json", ctype)
          assert.are.same('{"detail":"Internal Server Error"}', body)
          srv:wait_log("GET " .. p .. "/boom: tests/apps/debug/app%.lua:%d+: attempt", 5)
          srv:wait_log("^%s+tests/apps/debug/app%.lua:%d+: in function", 5)
        end)
      end

      it(what .. ": an http_error and a success stay as they are", function()
        local res = get(p .. "/http-error", { accept = "text/html" })
        assert.are.same(404, res.status)
        assert.are.same('{"detail":"Item not found"}', res.body)
        res = get(p .. "/ok", { accept = "text/html" })
        assert.are.same(200, res.status)
        assert.are.same('{"ok":true}', res.body)
        res = get(p .. "/vararg")   -- function(...) is given req, as function(req) is
        assert.are.same(200, res.status)
        assert.are.same({ path = p .. "/vararg", n = 1 }, res:json())
      end)
    end

    if cfg.mw then
      it("a middleware's error", function()
        if cfg.dev then
          local res = get("/p/ok", { ["x-crash"] = "1" })
          assert.are.same(500, res.status)
          local body = res:json()
          assert.is_truthy(body.detail:find("app.lua:%d+: middleware bug$"), body.detail)
          assert.is_truthy(body.traceback[#body.traceback]:find(TB_LINE))
          -- a request no route takes goes through the middleware too
          res = get("/nowhere", { ["x-crash"] = "1", accept = "text/html" })
          assert.are.same(500, res.status)
          assert.are.same("text/html; charset=utf-8", res.headers["content-type"])
          assert.is_truthy(res.body:find("GET /nowhere", 1, true))
          assert.is_truthy(res.body:find("middleware bug", 1, true))
        else
          assert_plain("/p/ok", { ["x-crash"] = "1", accept = "text/html" })
          assert_plain("/nowhere", { ["x-crash"] = "1" })
        end
      end)
    end

    it("a WebSocket route's error before the upgrade", function()
      local headers = { connection = "Upgrade", upgrade = "websocket",
                        ["sec-websocket-version"] = "13",
                        ["sec-websocket-key"] = "dGhlIHNhbXBsZSBub25jZQ==" }
      if not cfg.dev then return assert_plain("/ws", headers) end
      local res = get("/ws", headers)
      assert.are.same(500, res.status)
      assert.is_truthy(res:json().detail:find("attempt to index local 'cfg'", 1, true))
    end)
  end)
end

describe("error pages (the test client)", function()
  it("carries the error with { debug = true }, and only then", function()
    local client = t.client(APP, { debug = true, log_level = 4 })
    local res = client:get("/c/boom")
    assert.are.same(500, res.status)
    assert.is_truthy(res:json().detail:find("attempt to index local 't'", 1, true))
    assert.is_truthy(res:json().traceback[1]:find(TB_LINE))
    res = client:get("/p/boom", { headers = { accept = "text/html" } })
    assert.are.same(500, res.status)
    assert.are.same("text/html; charset=utf-8", res.headers["content-type"])
    assert.is_truthy(res.body:find("attempt to index local &#39;t&#39;", 1, true))
    client:close()
    -- the development mode went with it
    client = t.client(APP, { log_level = 4 })
    for _, path in ipairs{ "/c/boom", "/p/boom", "/c/unserializable" } do
      res = client:get(path, { headers = { accept = "text/html" } })
      assert.are.same(500, res.status)
      assert.are.same('{"detail":"Internal Server Error"}', res.body)
    end
    client:close()
  end)
end)
