-- bench/apps/validation: one validated route for bench_validation (bench/run.sh), answered
-- 200 (GET /items?limit=10&q=towel) or 422 (GET /items?limit=ten&q=towel).
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "validation bench" }

app:get("/items", {
  query = { limit = s.integer{ min = 1, max = 100 }, q = s.string{ max_length = 50 },
            page = s.integer{ default = 1 } },
}, function(req)
  return { limit = req.query.limit, q = req.query.q, page = req.query.page }
end)

return app
