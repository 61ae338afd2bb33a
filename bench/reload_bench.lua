-- bench/run.sh's reload section (run by `moonlet test`): how long from the write of a
-- file to the new code answering, as a user sees it (10 edits of app.lua, the new version
-- polled for every millisecond over a socket); then wrk on /version while 20 reloads
-- happen (failed requests: non-2xx and socket errors); then the server's RSS and
-- descriptors before and after 100 reloads.
local t = require "moonlet.testing"

local function app_source(v)
  return ([[
local app = require("moonlet").app{}
app:get("/version", function() return { version = %q } end)
return app
]]):format(v)
end

local function version(srv)
  local res = t.request(srv.port, "GET", "/version")
  return res and res.status == 200 and res:json().version
end

local function edit(dir, srv, v)
  local t0 = t.now()
  t.write_file(dir .. "/app.lua", app_source(v))
  while version(srv) ~= v do
    if t.now() - t0 > 5 then error("not reloaded: " .. v) end
    t.sleep(0.001)
  end
  return (t.now() - t0) * 1000
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  return n % 2 == 1 and xs[(n + 1) / 2] or (xs[n / 2] + xs[n / 2 + 1]) / 2
end

describe("bench", function()
  it("reload", function()
    local dir = t.tmpdir()
    t.write_file(dir .. "/app.lua", app_source("v0"))
    local srv = t.server{ app = dir, args = { "--reload", "--log-level", "warn" } }
    local ms = {}
    for i = 1, 10 do
      t.sleep(0.05)   -- an edit, not a burst
      ms[i] = edit(dir, srv, "e" .. i)
    end
    local sorted = {}
    for i, v in ipairs(ms) do sorted[i] = v end
    local med = median(sorted)
    print(string.format("%-48s %s", "write -> new code answering, 10 edits (ms)",
                        table.concat((function()
                          local out = {}
                          for i, v in ipairs(ms) do out[i] = string.format("%.0f", v) end
                          return out
                        end)(), " ")))
    print(string.format("%-48s %6.1f ms   target < 100: %s", "median", med,
                        med < 100 and "met" or "NOT met"))

    local wrk = t.spawn({ "-t1", "-c16", "-d4s", "http://127.0.0.1:" .. srv.port .. "/version" },
                        { bin = "/usr/bin/wrk" })
    t.sleep(0.3)
    for i = 1, 20 do
      edit(dir, srv, "w" .. i)
      t.sleep(0.1)
    end
    assert(wrk:wait(20) == 0, "wrk failed")
    local out = wrk:stdout()
    local total = tonumber(out:match("(%d+) requests in"))
    local non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
    local sock = out:match("Socket errors: ([^\n]+)") or "none"
    print(string.format("%-48s %d requests, %d non-2xx, socket errors: %s",
                        "wrk /version during 20 reloads", total, non2xx, sock))

    t.sleep(0.3)
    local fd0, rss0 = srv:fd_count(), srv:rss_kb()
    for i = 1, 100 do edit(dir, srv, "m" .. i) end
    t.sleep(0.3)
    print(string.format("%-48s RSS %.1f -> %.1f MB, descriptors %d -> %d", "100 reloads",
                        rss0 / 1024, srv:rss_kb() / 1024, fd0, srv:fd_count()))
    srv:stop()
  end)
end)
