-- bench/apps/framework: the framework's per-request parts together for bench_framework
-- (bench/run.sh): GET /items?limit=10&q=towel&page=2 with two dependencies, a validated
-- query of three fields and one middleware, against apps/hello's bare /hello.
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "framework bench" }

app:use(function(req, next)
  local res = next(req)
  res.headers["x-app"] = "bench"
  return res
end)

local settings = { page_size = 20 }
local function get_settings() return settings end
local function current_user(req) return req:header("x-user") or "anonymous" end

app:get("/items", {
  query = { limit = s.integer{ min = 1, max = 100 }, q = s.string{ max_length = 50 },
            page = s.integer{ min = 1, default = 1 } },
  deps = { settings = get_settings, user = current_user },
}, function(req)
  return { limit = req.query.limit, q = req.query.q, page = req.query.page,
           user = req.deps.user }
end)

return app
