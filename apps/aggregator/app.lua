-- The aggregator: one request fans out to many upstream calls at once.
--   GET /upstream/delay?ms=N   -> {"ms": N} after N ms (a slow upstream, simulated)
--   GET /fanout?n=K&ms=N       -> calls $UPSTREAM_URL/upstream/delay?ms=N K times
--                                 concurrently and returns {"count": K, "results": [...]}
-- K calls of N ms each take about N ms in all, not K * N: each call yields while it waits.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "Aggregator", version = "1.0.0" }

-- Where the upstream lives comes from configuration, never from the request (a client's
-- Host header could send these calls anywhere). By default: this app on its usual port.
local upstream = os.getenv("UPSTREAM_URL") or "http://127.0.0.1:8000"

local function int_param(req, name, default, max)
  local v = tonumber(req.query[name] or default)
  if not v or v < 0 or v > max or v % 1 ~= 0 then
    error(moonlet.http_error(422, name .. " must be an integer from 0 to " .. max))
  end
  return v
end

app:get("/upstream/delay", function(req)
  local ms = int_param(req, "ms", 0, 60000)
  moonlet.sleep(ms / 1000)
  return { ms = ms }
end)

app:get("/fanout", function(req)
  local n = int_param(req, "n", 10, 1000)
  local ms = int_param(req, "ms", 100, 60000)
  local url = upstream .. "/upstream/delay?ms=" .. ms
  local calls = {}
  for i = 1, n do
    calls[i] = function()
      local res, err = moonlet.http.get(url, { timeout = 10 })
      if not res then error(moonlet.http_error(502, "upstream: " .. err)) end
      if res.status ~= 200 then error(moonlet.http_error(502, "upstream answered " .. res.status)) end
      return res:json()
    end
  end
  local results = moonlet.array{ moonlet.gather(unpack(calls, 1, n)) }
  return { count = n, results = results }
end)

return app
