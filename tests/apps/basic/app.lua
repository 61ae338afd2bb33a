-- The app the specs drive: one route per behaviour under test.
local moonlet = require "moonlet"
local users = require "routes.users"   -- APPDIR is on package.path

local app = moonlet.app{ title = "basic" }

users.install(app)

app:get("/", function() return { root = true } end)
app:get("/text", function() return "plain text" end)
app:get("/status", function() return 201, { created = true }, { ["x-extra"] = "1" } end)
app:get("/nobody", function() return 204, nil end)
app:get("/response", function()
  return moonlet.response{ status = 202, headers = { ["content-type"] = "text/csv" }, body = "a,b\n" }
end)
app:get("/multi-header", function()
  return 200, "ok", { ["set-cookie"] = { "a=1", "b=2" } }
end)
app:get("/empty-list", function() return { items = moonlet.array{} , obj = {} } end)
app:get("/teapot", function() error(moonlet.http_error(418, "I'm a teapot")) end)
app:get("/notfound", function()
  error(moonlet.http_error(404, "Item not found", { ["x-why"] = "missing" }))
end)
app:get("/http-error/{status:int}", function(req) error(moonlet.http_error(req.params.status)) end)
app:get("/http-error-table", function()
  error(moonlet.http_error(422, { { loc = { "query", "n" }, msg = "not a number" } }))
end)
app:get("/boom", function() local t = nil; return t.field end)
app:get("/bad-header", function() return 200, "x", { ["x-evil"] = "a\r\nSet-Cookie: pwned=1" } end)
app:get("/bad-header-name", function() return 200, "x", { ["x evil"] = "a" } end)
-- other control characters break the response for strict clients too; a tab does not
app:get("/bad-header-ctl", function() return 200, "x", { ["x-ctl"] = "a\fb" } end)
app:get("/header-tab", function() return 200, "x", { ["x-tab"] = "a\tb" } end)
app:get("/bad-status", function() return 99, "x" end)
app:get("/nan", function() return { v = 0/0 } end)
app:get("/query", function(req) return req.query end)
app:route({ "GET", "POST" }, "/headers", function(req) return req.headers end)
app:post("/slow-echo", function(req)
  moonlet.sleep(0.05)
  return { body = req.body }
end)
app:get("/path/{rest}", function(req) return { rest = req.params.rest, path = req.path } end)
app:route({ "GET", "POST" }, "/method", function(req) return { method = req.method } end)
app:put("/put", function(req) return { body = req.body } end)
app:delete("/items/{id:int}", function(req) return { deleted = req.params.id } end)
app:post("/form", function(req) return req:form() end)
app:post("/echo", function(req) return { body = req.body, len = #req.body } end)
app:post("/json", function(req) return req:json() end)
app:get("/sleep", function(req)
  local s = tonumber(req.query.s) or 1
  moonlet.sleep(s)
  return { slept = s, path = req.path, q = req.query.s }
end)
-- /wait counts the requests sleeping in it; /lua-heap gives the live Lua heap after a full
-- collection (conn_memory_spec reads it while the sleepers wait)
local waiting = 0
app:get("/wait", function(req)   -- shaped as apps/hello's /sleep, a typical handler
  local s = tonumber(req.query.s or 1)
  if not (s and s >= 0 and s <= 60) then
    error(moonlet.http_error(422, "s must be a number from 0 to 60"))
  end
  waiting = waiting + 1
  moonlet.sleep(s)
  waiting = waiting - 1
  return { slept = s }
end)
app:get("/lua-heap", function()
  collectgarbage("collect")
  return { kb = collectgarbage("count"), waiting = waiting }
end)
-- which of moonlet's optional modules a pool thread's state has loaded (none: the app uses
-- none of them; lazy_modules_spec)
app:get("/pool-modules", { pool = true }, function()
  local loaded = {}
  for _, m in ipairs{ "moonlet.middleware", "moonlet.db", "moonlet.http", "moonlet.redis",
                      "moonlet.jobs", "moonlet.openapi" } do
    if package.loaded[m] then loaded[#loaded + 1] = m end
  end
  return { loaded = loaded, n = #loaded }
end)
app:get("/sleep-then-boom", function()
  moonlet.sleep(0.01)
  error("late failure")
end)
app:get("/yield", function() coroutine.yield() end)
app:get("/big", function(req)
  return string.rep("x", tonumber(req.query.n) or 100000)
end)
app:get("/unicode", function() return { s = "héllo \"q\" \\ / \n\t\1" } end)
app:get("/numbers", function() return { i = 42, neg = -7, f = 0.1, big = 2^53, small = 1e-7 } end)

-- holds the loop: the watchdog's case
app:get("/block", function(req)
  local until_t = moonlet.now() + (tonumber(req.query.s) or 0.2)
  while moonlet.now() < until_t do end
  return { blocked = true }
end)

-- concurrency primitives
local flags = moonlet.shared.dict("flags")
app:get("/flag", function(req) return { v = flags:get(req.query.k) } end)
app:get("/gather", function()
  local t0 = moonlet.now()
  local a, b, c = moonlet.gather(
    function() moonlet.sleep(0.3); return 1 end,
    function() moonlet.sleep(0.3); return "two" end,
    function() moonlet.sleep(0.3); return nil end)
  return { a = a, b = b, c = c == nil, elapsed = moonlet.now() - t0 }
end)
-- the first result of each function, whether it finished at once or after waiting
app:get("/gather-first", function()
  local a, b, c, d = moonlet.gather(
    function() return "a", "extra" end,
    function() return nil, "failed at once" end,
    function() moonlet.sleep(0.01); return "c", "extra" end,
    function() moonlet.sleep(0.01); return nil, "failed later" end)
  return { a = a, b = b == nil, c = c, d = d == nil }
end)
app:get("/gather-error", function()
  moonlet.gather(
    function() moonlet.sleep(0.05); error("gather failure") end,
    function() moonlet.sleep(0.3); flags:set("gather_sibling_ran", true) end)
end)
app:get("/gather-http-error", function()
  moonlet.gather(function() error(moonlet.http_error(409, "from a child")) end)
end)
app:get("/gather-errors", function()
  local r = { moonlet.gather({ return_errors = true },
    function() error("first fails") end,
    function() moonlet.sleep(0.01); return 2 end) }
  return { is_error = moonlet.is_error(r[1]), msg = tostring(r[1]), second = r[2],
           plain = moonlet.is_error(r[2]) }
end)
app:get("/gather-slow", function(req)
  moonlet.gather(
    function() moonlet.sleep(0.3); flags:set("slow1:" .. req.query.tag, true) end,
    function() moonlet.sleep(0.3); flags:set("slow2:" .. req.query.tag, true) end)
  return { done = true }
end)
app:get("/nested-gather", function()
  local x, y = moonlet.gather(function()
    return (moonlet.gather(function() moonlet.sleep(0.01) return 10 end))
  end, function() return 20 end)
  return { x = x, y = y }
end)
app:get("/timeout", function(req)
  local v, err = moonlet.timeout(0.1, function(s)
    moonlet.sleep(s)
    flags:set("timeout_finished:" .. s, true)
    return "done"
  end, tonumber(req.query.s))
  return { v = v, err = err }
end)
app:get("/timeout-error", function()
  moonlet.timeout(1, function() error("inside timeout") end)
end)
app:get("/spawn", function(req)
  moonlet.spawn(function(k)
    moonlet.sleep(0.1)
    flags:set(k, true)
  end, req.query.k)
  return { spawned = true }
end)
app:get("/spawn-error", function()
  moonlet.spawn(function() moonlet.sleep(0.01); error("background boom") end)
  return { spawned = true }
end)

-- moonlet.log at each level (the server runs at --log-level info: debug is not shown)
app:get("/log", function(req)
  for _, level in ipairs{ "debug", "info", "warn", "error" } do
    moonlet.log[level]("log-spec " .. level .. " " .. req.query.id)
  end
  return { ok = true }
end)

-- moonlet.cond: waiters woken by another request; one cancelled by a timeout
local cond = moonlet.cond()
app:get("/cond/wait", function()
  return { got = cond:wait() }
end)
app:get("/cond/waiting", function() return { n = cond:waiting() } end)
app:post("/cond/notify", function(req)
  if req.query.one then return { woken = cond:notify_one(req.body) } end
  return { woken = cond:notify_all(req.body) }
end)
app:get("/cond/timeout", function()
  local v, err = moonlet.timeout(0.1, function() return cond:wait() end)
  return { v = v, err = err, waiting = cond:waiting() }
end)
app:get("/cond/gather", function()
  local c = moonlet.cond()
  local order = {}
  local a, b = moonlet.gather(function()
    local v = c:wait()
    order[#order + 1] = "a"
    return v
  end, function()
    moonlet.sleep(0.01)
    order[#order + 1] = "notify"
    return c:notify_all("hi")
  end)
  return { a = a, b = b, order = order }
end)

return app
