-- Run by tests/spec/shared_spec.lua in a `moonlet test` process of its own (a process has
-- one region, and the suite's runner may have made its own already): this runner plays the
-- supervisor of --workers. It makes the region with ml_shared_region_create (the binary
-- exports it), hands its descriptor to two `moonlet serve` processes through
-- MOONLET_SHARED_FD, and checks that they and this process see one set of dictionaries:
-- exact counts from both at once, and one of them killed with SIGKILL while it takes the
-- lock in a loop does not wedge the other.
local t = require "moonlet.testing"
local moonlet = require "moonlet"
local ffi = require "ffi"

ffi.cdef [[
int ml_shared_region_create(size_t bytes, char *err, size_t errlen);
int fcntl(int fd, int cmd, ...);
]]
local F_SETFD = 2

describe("one region, two server processes", function()
  local a, b
  lazy_setup(function()
    local err = ffi.new("char[256]")
    local fd = ffi.C.ml_shared_region_create(4000000, err, 256)
    assert(fd >= 0, ffi.string(err))
    assert(ffi.C.fcntl(fd, F_SETFD, ffi.new("int", 0)) == 0)   -- passed on to the servers
    local env = { MOONLET_SHARED_FD = tostring(fd) }
    local args = { "--pool-size", "4" }
    a = t.server{ app = "tests/apps/shared", args = args, env = env }
    b = t.server{ app = "tests/apps/shared", args = args, env = env }
  end)
  lazy_teardown(function()
    if a then a:stop() end
    if b then b:stop() end
  end)

  it("count exactly from both servers at once (loop and pool threads in each)", function()
    local n, per = 60, 200
    local req = "GET /incr?n=" .. per .. " HTTP/1.1\r\nHost: x\r\n\r\n"
    local conns = {}
    for i = 1, n do   -- all sent before any is read: both servers busy at the same time
      conns[i] = assert(t.connect(i % 2 == 0 and a.port or b.port))
      assert(conns[i]:send(req))
    end
    for i = 1, n do
      assert.are.same(200, assert(conns[i]:read_response(20)).status)
      conns[i]:close()
    end
    local want = { v = n * per }
    assert.are.same(want, assert(a:request("GET", "/total")):json())
    assert.are.same(want, assert(b:request("GET", "/total")):json())
    assert.are.same(n * per, moonlet.shared.dict("counters"):get("total"))   -- this process too
  end)

  it("keep serving when one is killed while it takes the lock in a loop", function()
    local c = assert(t.connect(a.port))
    assert(c:send("GET /spin?s=5 HTTP/1.1\r\nHost: x\r\n\r\n"))
    local spin, deadline = moonlet.shared.dict("counters"), t.now() + 3
    while not spin:get("spin") and t.now() < deadline do t.sleep(0.01) end
    assert.is_truthy(spin:get("spin"), "the spin route never started")
    t.sleep(0.1)
    a:kill()
    a = nil
    -- the first to take the lock now (this process) repairs: if a died in the middle of a
    -- change, "counters" is emptied (and that logged here), else nothing was lost
    local t0 = t.now()
    local before = moonlet.shared.dict("counters"):get("total") or 0
    local res = assert(b:request("GET", "/incr?n=100", { timeout = 5 }))
    assert.are.same(200, res.status)
    assert.is_truthy(t.now() - t0 < 2, "took " .. (t.now() - t0) .. " s")
    assert.are.same(before + 100, moonlet.shared.dict("counters"):get("total"))
  end)
end)
