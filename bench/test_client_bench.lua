-- bench/run.sh's test_client section (run by `moonlet test`): N GET /co/hello through the
-- in-process test client vs N through real sockets to the binary serving the same app,
-- sequential round trips in this same runner: a new connection per request (t.request)
-- and one keep-alive connection. Prints the rates and the ratio vs the 5x target.
local t = require "moonlet.testing"

local N = tonumber(os.getenv("BENCH_N")) or 5000
local APP = "tests/apps/test_client"
local PATH = "/co/hello"

local function rate(fn)
  for _ = 1, 200 do fn() end   -- warm-up
  local t0 = t.now()
  for _ = 1, N do fn() end
  return N / (t.now() - t0)
end

describe("bench", function()
  it("test_client", function()
    local c = t.client(APP)
    local r_client = rate(function() assert(c:get(PATH).status == 200) end)
    c:close()
    local srv = t.server{ app = APP, args = { "--log-level", "warn" } }
    local r_socket = rate(function() assert(t.request(srv.port, "GET", PATH).status == 200) end)
    local conn = assert(t.connect(srv.port))
    local req = "GET " .. PATH .. " HTTP/1.1\r\nHost: x\r\n\r\n"
    local r_keep = rate(function()
      assert(conn:send(req))
      assert(assert(conn:read_response()).status == 200)
    end)
    conn:close()
    srv:stop()
    local ratio = r_client / r_socket
    print(string.format("%-44s %10s", "GET " .. PATH .. ", " .. N .. " sequential", "req/s"))
    print(string.format("%-44s %10.0f", "test client (in process)", r_client))
    print(string.format("%-44s %10.0f", "socket to the binary, new connection each", r_socket))
    print(string.format("%-44s %10.0f", "socket to the binary, one keep-alive conn", r_keep))
    print(string.format("%-44s %10.2f   target >= 5: %s", "ratio client / socket (new connection)",
                        ratio, ratio >= 5 and "met" or "NOT met"))
    print(string.format("%-44s %10.2f", "ratio client / socket (keep-alive)", r_client / r_keep))
  end)
end)
