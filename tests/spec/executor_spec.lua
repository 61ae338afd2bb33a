-- The executor: moonlet.run_in_pool's threads (--executor-size), apart from the pool that
-- pooled routes use (--pool-size), as FastAPI keeps run_in_executor apart from `def` routes.
local t = require "moonlet.testing"

local function hold(port, path)
  local c = assert(t.connect(port))
  assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
  return c
end

-- Waits until the executor job of a /rip/sleep?...&tag=TAG started (it counts itself in the
-- shared dictionary): a thread that starts and loads its state can take a while (TSan).
local function started(port, tag)
  local function ran()
    return assert(t.request(port, "GET", "/shared/get?k=ran:" .. tag)):json().v
  end
  local deadline = os.time() + 10
  while ran() ~= 1 and os.time() < deadline do t.sleep(0.02) end
  assert.are.same(1, ran(), "the job tagged " .. tag .. " never started")
end

-- the response a connection from hold gets; the connection closes
local function answer(c)
  local res = assert(c:read_response(5))
  c:close()
  return res
end

describe("the executor", function()
  it("runs run_in_pool calls while pooled routes hold every pool thread", function()
    local srv = t.server{ app = "tests/apps/pool",
                          args = { "--pool-size", "2", "--executor-size", "4" } }
    local p1, p2 = hold(srv.port, "/p/sleep?s=1.5"), hold(srv.port, "/p/sleep?s=1.5")
    t.sleep(0.2)   -- both pool threads are in their sleep
    local r = t.concurrent(srv.port, 4, "GET /rip/sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n", 10)
    assert.are.same(4, r.ok)
    -- a correctness bound, not a timing target: 4 threads take ~0.5 s, one round behind
    -- the pool's two sleeps would take 1.3 s and more
    assert.is_truthy(r.elapsed < 1.0, "4 run_in_pool calls on 4 threads took " .. r.elapsed)
    assert.are.same({ slept = 1.5 }, answer(p1):json())
    assert.are.same({ slept = 1.5 }, answer(p2):json())
    srv:stop()
  end)

  it("answers 503 when its queue is full, while the pool still serves", function()
    local srv = t.server{ app = "tests/apps/pool",
                          args = { "--pool-size", "4", "--executor-size", "1", "--pool-queue", "1" } }
    local c1 = hold(srv.port, "/rip/sleep?s=1&tag=c1")   -- runs
    started(srv.port, "c1")
    local c2 = hold(srv.port, "/rip/sleep?s=0.1")        -- waits
    t.sleep(0.2)
    local res = assert(t.request(srv.port, "GET", "/rip/sleep?s=0.1"))
    assert.are.same(503, res.status)
    assert.are.same("1", res.headers["retry-after"])
    assert.are.same({ detail = "Service Unavailable" }, res:json())
    assert.are.same(200, assert(t.request(srv.port, "GET", "/p/1")).status)
    assert.are.same({ 200, 200 }, { answer(c1).status, answer(c2).status })
    srv:stop()
  end)

  it("is not used by run_in_pool on a pool thread: the call runs inline there", function()
    local srv = t.server{ app = "tests/apps/pool",
                          args = { "--pool-size", "2", "--executor-size", "1", "--pool-queue", "0" } }
    local from_loop = assert(t.request(srv.port, "GET", "/rip/state")):json()
    assert.are_not.same(from_loop.route, from_loop.call)   -- the loop's state, then an executor's
    local c = hold(srv.port, "/rip/sleep?s=1&tag=c")      -- the executor's one thread is busy
    started(srv.port, "c")
    assert.are.same(503, assert(t.request(srv.port, "GET", "/rip/sleep?s=0.1")).status)
    local res = assert(t.request(srv.port, "GET", "/p/state"))
    assert.are.same(200, res.status)
    local pooled = res:json()
    assert.are.same(pooled.route, pooled.call)             -- same state: inline
    assert.are_not.same(from_loop.call, pooled.call)
    assert.are.same(200, answer(c).status)
    srv:stop()
  end)

  it("loads changed code with --reload, as the pool does", function()
    local dir = t.tmpdir()
    local function write(v) t.write_file(dir .. "/version.lua", ("return %q\n"):format(v)) end
    write("v1")
    t.write_file(dir .. "/app.lua", [[
local moonlet = require "moonlet"
local app = moonlet.app{}
app:get("/loop", function() return { v = require "version" } end)
app:get("/rip", function()
  return { v = moonlet.run_in_pool(function() return require "version" end) }
end)
app:get("/pooled", { pool = true }, function() return { v = require "version" } end)
return app
]])
    local srv = t.server{ app = dir, args = { "--reload", "--pool-size", "1", "--executor-size", "1" } }
    local function get(path) return assert(t.request(srv.port, "GET", path)):json().v end
    assert.are.same({ "v1", "v1", "v1" }, { get("/loop"), get("/rip"), get("/pooled") })
    write("v2")
    local deadline = t.now() + 5
    while get("/loop") ~= "v2" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same({ "v2", "v2", "v2" }, { get("/loop"), get("/rip"), get("/pooled") })
    srv:stop()
  end)

  it("gives the seed's /b (100 concurrent 1 s blocking calls) one round with defaults", function()
    local srv = t.server{ app = "apps/seed_demo", args = { "--log-level", "warn" } }
    local r = t.concurrent(srv.port, 100, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(100, r.ok)
    -- one round is ~1 s; the shared 40-thread pool took three (3 s)
    assert.is_truthy(r.elapsed < 2.5, "100 concurrent /b took " .. r.elapsed .. " s")
    srv:stop()
  end)
end)
