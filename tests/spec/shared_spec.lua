-- moonlet.shared through the real binary: the OpenResty-style methods (safe_set, safe_add,
-- ttl, expire, capacity, free_space), LRU eviction in a small --shared-mem, exact counts
-- from coroutine and pool routes at once; one region mapped by two server processes
-- (tests/support/shared_workers_spec.lua). (The allocator, 4 processes x 4 threads and
-- processes dying with the lock, idle or mid-change: tests/unit/shared_test.c.)
local t = require "moonlet.testing"

describe("moonlet.shared", function()
  local srv
  local function get(path) return assert(t.request(srv.port, "GET", path, { timeout = 20 })):json() end
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/shared", args = { "--pool-size", "8", "--shared-mem", "300000" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("has safe_set, safe_add, ttl, expire, capacity and free_space", function()
    local r = get("/api")
    assert.are.same({ ok = true, forcible = false }, r.safe_set)
    assert.are.same({ ok = true, forcible = false }, r.safe_add_new)
    assert.are.same({ ok = false, err = "exists" }, r.safe_add_again)
    assert.are.same({ ok = true, forcible = false }, r.set)
    assert.are.same(0, r.ttl_never)
    assert.is_truthy(r.ttl_b > 9 and r.ttl_b <= 10, "ttl " .. r.ttl_b)
    assert.are.same({ ok = false, err = "not found" }, r.ttl_missing)
    assert.are.same({ ok = true }, r.expire)
    assert.are.same({ ok = false, err = "not found" }, r.expire_missing)
    assert.is_truthy(r.ttl_a > 0 and r.ttl_a <= 0.05, "ttl " .. r.ttl_a)
    assert.are.same(true, r.a_after)
    assert.are.same({ ok = true }, r.expire_forever)
    assert.are.same(0, r.ttl_b_after)
    assert.are.same(300000, r.capacity)
    assert.is_truthy(r.free_space > 200000 and r.free_space < 300000, "free " .. r.free_space)
    assert.is_truthy(r.free_space - r.free_space_after >= 10000, "a 10 kB value took "
                     .. (r.free_space - r.free_space_after))
    assert.matches("ttl must be 0 to 1e9 seconds", r.bad_ttl)
  end)

  it("evicts the least recently used on set, never on safe_set", function()
    local r = get("/lru?n=20")
    local p, w = r.present, r.written
    assert.is_truthy(w > 100 and w < 300, "wrote " .. w)
    assert.are.same(true, p[1])            -- read after every write: never the least recent
    for j = 2, 21 do assert.are.same(false, p[j], "k" .. j) end   -- the 20 oldest others went
    for j = 22, w do assert.are.same(true, p[j], "k" .. j) end
    assert.are.same(w - 20, r.count)
    assert.are.same("k" .. w, r.first)    -- keys(): most recently used first
    assert.matches("^no memory: shared dictionaries are full %(%-%-shared%-mem 300000 bytes%)$", r.safe.err)
    assert.matches("^too large: no entry this size fits in %-%-shared%-mem 300000 bytes$", r.big.err)
  end)

  it("counts exactly from coroutines and pool threads at once", function()
    local n, per = 300, 100
    local r = t.concurrent(srv.port, n, "GET /incr?n=" .. per .. " HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(n, r.ok)
    assert.are.same({ v = n * per }, get("/total"))
  end)
end)

describe("--shared-mem", function()
  it("too small for the region's directory fails at the first dictionary use, saying so", function()
    local r = t.run({ "serve", "tests/apps/shared", "--port", "0", "--shared-mem", "1000" })
    assert.are.same(2, r.status)
    assert.matches("app%.lua:7: moonlet%.shared: %-%-shared%-mem 1000: too small, at least %d+ bytes", r.stderr)
  end)
end)

describe("moonlet.shared across processes", function()
  it("is one set of dictionaries for every process mapping the region (MOONLET_SHARED_FD)", function()
    -- its own runner: a process has one region, and this one may have made its own
    local r = t.run({ "test", "tests/support/shared_workers_spec.lua" }, 60)
    assert.matches("\n2 passed, 0 failed", r.stdout, 1, true)
    assert.are.same(0, r.status, r.stdout .. r.stderr)
  end)

  it("makes a worker given a descriptor that is no region exit 2 with why", function()
    local r = t.run({ "serve", "tests/apps/shared", "--port", "0" },
                    { env = { MOONLET_SHARED_FD = "0" } })   -- stdin: /dev/null
    assert.are.same(2, r.status)
    assert.matches("descriptor 0 is not a region", r.stderr, 1, true)
  end)
end)
