-- apps/chat end to end: the page in headless Chromium (puppeteer-core), a message typed
-- into it seen by a second WebSocket client and on the /events stream (tests/support/
-- chat_watcher.py); the page's files from app:static.
local t = require "moonlet.testing"

describe("apps/chat", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "apps/chat" } end)
  lazy_teardown(function() srv:stop() end)

  it("serves its page and files with app:static", function()
    local res = assert(t.request(srv.port, "GET", "/"))
    assert.are.same(200, res.status)
    assert.are.same("text/html; charset=utf-8", res.headers["content-type"])
    assert.matches("<title>moonlet chat</title>", res.body, 1, true)
    res = assert(t.request(srv.port, "GET", "/chat.js"))
    assert.are.same("text/javascript; charset=utf-8", res.headers["content-type"])
    assert.are.same(404, assert(t.request(srv.port, "GET", "/../app.lua")).status)
  end)

  it("a message typed in Chromium reaches another WebSocket client and /events", function()
    local watcher = t.spawn({ "tests/support/chat_watcher.py", tostring(srv.port) },
                            { bin = "/usr/bin/python3" })
    watcher:wait_log("^ready$", 20)
    local text = "hello from chromium " .. os.time()
    local browser = t.run({ "tests/support/chat_browser.js",
                            "http://127.0.0.1:" .. srv.port .. "/", text },
                          { bin = "node", timeout = 90,
                            env = { NODE_PATH = "build/node/node_modules" } })
    assert.are.same(0, browser.status, browser.stderr)
    local page = t.json_decode(browser.stdout)
    assert.are.same("connected", page.status)
    assert.are.same({ text }, page.log)          -- its own message came back through /ws
    assert.are.same(0, watcher:wait(30), watcher:stderr())
    local got = t.json_decode(watcher:stdout())
    assert.are.same(text, got.ws)
    assert.are.same({ event = "message", data = '{"text":"' .. text .. '"}' }, got.sse)
  end)
end)
