-- The access log through the real binary: its fields (curl as the client), JSON lines, a
-- file reopened on SIGUSR1 after a logrotate-style rename, and 499 for a request the client
-- abandoned.
local t = require "moonlet.testing"
local cjson = require "cjson"

describe("access log", function()
  it("text: method, path with query, status, time, bytes, client, agent", function()
    local srv = t.server{ app = "tests/apps/basic" }
    local mark = srv:mark()
    local r = t.run({ "-s", "-A", 'agent "q"', "-o", "/dev/null", "-w", "%{size_download}",
                      "http://127.0.0.1:" .. srv.port .. "/query?a=1&b=2" }, { bin = "curl" })
    assert.are.same(0, r.status)
    local line = srv:wait_log("GET /query", 5, mark)
    local status, ms, bytes, client, ua = line:match(
      'info  GET /query%?a=1&b=2 (%d+) ([%d.]+)ms (%d+)B (127%.0%.0%.1:%d+) (".*")$')
    assert.are.same("200", status)
    assert.is_true(tonumber(ms) >= 0)
    assert.is_true(tonumber(bytes) > tonumber(r.stdout))   -- the head counts too
    assert.is_truthy(client)
    assert.are.same([["agent \"q\""]], ua)
    srv:stop()
  end)

  it("json: one object a line with every field", function()
    local srv = t.server{ app = "tests/apps/basic", args = { "--access-log", "json" } }
    local mark = srv:mark()
    local res = srv:request("GET", "/text?x=1", { headers = { ["user-agent"] = "spec" } })
    assert.are.same(200, res.status)
    local line = srv:wait_log('^{"time"', 5, mark)
    local o = cjson.decode(line)
    assert.are.same({ "GET", "/text?x=1", 200, "spec" }, { o.method, o.path, o.status, o.user_agent })
    assert.is_truthy(o.client:match("^127%.0%.0%.1:%d+$"))
    assert.is_truthy(o.time:match("^%d+%-%d+%-%d+T[%d:.]+Z$"))
    assert.is_true(o.bytes > #res.body and o.duration_ms >= 0)
    assert.are.same(cjson.null, o.id)
    assert.is_nil(o.worker)   -- one process: no worker field
    srv:stop()
  end)

  it("off: no access line", function()
    local srv = t.server{ app = "tests/apps/basic", args = { "--access-log", "off" } }
    assert.are.same(200, srv:request("GET", "/text").status)
    assert.are.same(200, srv:request("GET", "/").status)
    srv:stop()
    assert.is_falsy(srv:stderr():find("GET /", 1, true))
  end)

  it("a file, reopened on SIGUSR1 after logrotate renamed it", function()
    local dir = t.tmpdir()
    local path = dir .. "/access.log"
    local srv = t.server{ app = "tests/apps/basic", args = { "--access-log-file", path } }
    assert.are.same(200, srv:request("GET", "/text?before=1").status)
    assert(os.rename(path, path .. ".1"))
    assert(srv:signal("USR1"))
    -- the reopen runs on the loop: wait for the new file before the next request
    for _ = 1, 500 do
      if io.open(path) then break end
      t.sleep(0.01)
    end
    assert.are.same(200, srv:request("GET", "/text?after=1").status)
    srv:stop()
    local old, new = t.read_file(path .. ".1"), t.read_file(path)
    assert.is_truthy(old:find("GET /text?before=1 200", 1, true))
    assert.is_falsy(old:find("after=1", 1, true))
    assert.is_truthy(new:find("GET /text?after=1 200", 1, true))
    assert.is_falsy(srv:stderr():find("GET /text", 1, true))
  end)

  it("SIGUSR1 without a file changes nothing (logrotate's postrotate never kills it)", function()
    local srv = t.server{ app = "tests/apps/basic" }
    assert(srv:signal("USR1"))
    t.sleep(0.1)
    assert.are.same(200, srv:request("GET", "/text?after=usr1").status)
    srv:wait_log("GET /text%?after=usr1 200", 5)
    assert.are.same(0, srv:stop())
  end)

  it("a request refused before its handler says why, in text and in JSON", function()
    for _, format in ipairs({ "text", "json" }) do
      local srv = t.server{ app = "tests/apps/basic", args = { "--access-log", format } }
      local mark = srv:mark()
      local c = t.connect(srv.port)
      assert(c:send("GET /text?no=host HTTP/1.1\r\nX-A: 1\r\n\r\n"))
      local res = c:read_response()
      assert.are.same(400, res.status)
      c:close()
      if format == "text" then
        local line = srv:wait_log("GET /text", 5, mark)
        assert.is_truthy(line:find('GET /text?no=host 400 ', 1, true))
        assert.is_truthy(line:find(' (Missing Host header)', 1, true))
      else
        local o = cjson.decode((srv:wait_log('^{"time"', 5, mark)))
        assert.are.same({ "GET", "/text?no=host", 400, "Missing Host header" },
                        { o.method, o.path, o.status, o.error })
        assert.is_true(o.bytes > 0)
      end
      srv:stop()
    end
  end)

  it("logs 499 for a request the client abandoned", function()
    local srv = t.server{ app = "tests/apps/basic" }
    local mark = srv:mark()
    local c = t.connect(srv.port)
    assert(c:send("GET /sleep?s=5 HTTP/1.1\r\nHost: x\r\nUser-Agent: quitter\r\n\r\n"))
    t.sleep(0.1)
    c:close()
    local line = srv:wait_log("GET /sleep", 5, mark)
    assert.is_truthy(line:find('GET /sleep?s=5 499 ', 1, true))
    assert.is_truthy(line:find(' 0B 127.0.0.1:', 1, true))
    assert.is_truthy(line:find('"quitter"', 1, true))
    srv:stop()
  end)
end)
