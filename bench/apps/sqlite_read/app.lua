-- bench/apps/sqlite_read: the SQLite section of bench/run.sh (bench_sqlite).
--   BENCH_SQLITE_PATH=/tmp/x/items.db [BENCH_SQLITE_ROWS=10000] moonlet serve bench/apps/sqlite_read
-- At load (the loop's state, before the server listens) it creates the table items afresh
-- and fills it with BENCH_SQLITE_ROWS rows in one statement. GET /item/{id:int} is one point
-- read through moonlet.db (a coroutine route: the statement runs on libuv's threadpool);
-- GET /hello touches no database, to see whether the reads hold up the loop.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "bench sqlite_read", version = "1.0.0" }
local path = assert(os.getenv("BENCH_SQLITE_PATH"), "BENCH_SQLITE_PATH is not set")
local rows = tonumber(os.getenv("BENCH_SQLITE_ROWS")) or 10000
local db = assert(moonlet.db.open("sqlite:" .. path))

if not moonlet.in_pool() then
  assert(db:exec("DROP TABLE IF EXISTS items"))
  assert(db:exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL)"))
  assert(db:exec([[
    INSERT INTO items (id, name, price)
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
    SELECT i, 'item ' || i, i * 0.25 FROM n
  ]], rows))
end

app:get("/hello", function()
  return { message = "hello" }
end)

app:get("/item/{id:int}", function(req)
  local res, err = db:query("SELECT id, name, price FROM items WHERE id = ?", req.params.id)
  if not res then error("database: " .. tostring(err)) end
  if not res[1] then error(moonlet.http_error(404, "Item not found")) end
  return res[1]
end)

return app
