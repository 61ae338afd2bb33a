-- bench/apps/pg_read: the PostgreSQL section of bench/run.sh (bench_pg), over the tables of
-- `pgbench -i`.
--   BENCH_PG_URL=postgres://user:pass@127.0.0.1:PORT/db [BENCH_PG_POOL=16] [BENCH_PG_PIPELINE=1]
--     moonlet serve bench/apps/pg_read
-- GET /account/{id:int} is pgbench's select-only statement (`pgbench -S`) through
-- moonlet.db, with a pool of BENCH_PG_POOL connections, each carrying up to
-- BENCH_PG_PIPELINE statements at once: {"abalance": n}, or 404.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "bench pg_read", version = "1.0.0" }
local url = assert(os.getenv("BENCH_PG_URL"), "BENCH_PG_URL is not set")
local pool = tonumber(os.getenv("BENCH_PG_POOL")) or 16
local pipeline = tonumber(os.getenv("BENCH_PG_PIPELINE")) or 1
local db = assert(moonlet.db.open(url, { pool_size = pool, pipeline = pipeline }))

app:get("/account/{id:int}", function(req)
  local res, err = db:query("SELECT abalance FROM pgbench_accounts WHERE aid = ?", req.params.id)
  if not res then error("database: " .. tostring(err)) end
  if not res[1] then error(moonlet.http_error(404, "Account not found")) end
  return res[1]
end)

app:get("/hello", function()
  return { message = "hello" }
end)

return app
