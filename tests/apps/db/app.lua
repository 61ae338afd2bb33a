-- Database routes for tests/spec/db_sqlite_spec.lua and db_pg_spec.lua.
-- DB_URL picks the database (default sqlite::memory:), DB_POOL its pool_size, DB_PIPELINE
-- its pipeline (PostgreSQL).
local moonlet = require "moonlet"

local app = moonlet.app{ title = "db" }
local url = os.getenv("DB_URL") or "sqlite::memory:"
local db = assert(moonlet.db.open(url, { pool_size = tonumber(os.getenv("DB_POOL")),
                                         pipeline = tonumber(os.getenv("DB_PIPELINE")) }))
local pg = db.driver == "postgres"

-- Schema at load time (blocking, before the server listens); pool threads find it made.
if not moonlet.in_pool() then
  assert(db:exec(pg and [[
    CREATE TABLE IF NOT EXISTS items (id SERIAL PRIMARY KEY, name TEXT, qty INTEGER,
                                      price DOUBLE PRECISION, ok BOOLEAN)
  ]] or [[
    CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER,
                                      price REAL, ok BOOLEAN)
  ]]))
end

local function unpack_params(p)
  p = p or {}
  return unpack(p, 1, #p)
end

-- POST /q {"sql": "...", "params": [...], "exec": true} -> {"rows" or "res": ...} | {"err": ...}
local function run(req)
  local b = req:json()
  local fn = b.exec and db.exec or db.query
  local res, err = fn(db, b.sql, unpack_params(b.params))
  if not res then return { err = err } end
  return { res = res }
end
app:post("/q", run)
app:post("/pool/q", { pool = true }, run)

-- POST /batch {"stmts": [{"sql": "...", "params": [...], "exec": true}, ...], "tx": true}
--   -> {"out": [{"res": ...} | {"err": ...}, ...]}: the statements in order, on one
--   connection when "tx" (inside db:transaction; errors are returned, not raised).
app:post("/batch", function(req)
  local b = req:json()
  local function each(h)
    local out = {}
    for i, st in ipairs(b.stmts) do
      local fn = st.exec and h.exec or h.query
      local res, err = fn(h, st.sql, unpack_params(st.params))
      out[i] = res and { res = res } or { err = err }
    end
    return out
  end
  if not b.tx then return { out = each(db) } end
  local out, err = db:transaction(each)
  return { out = out, err = err }
end)

-- POST /par {"stmts": [...]} -> {"out": [...]}: /batch's statements all at once, each in a
--   task of its own (moonlet.gather): they reach the handle in one loop turn.
app:post("/par", function(req)
  local b = req:json()
  local fns = {}
  for i, st in ipairs(b.stmts) do
    fns[i] = function()
      local fn = st.exec and db.exec or db.query
      local res, err = fn(db, st.sql, unpack_params(st.params))
      return res and { res = res } or { err = err }
    end
  end
  return { out = { moonlet.gather(unpack(fns)) } }
end)

-- wrong argument types raise (the handler reports what it caught)
app:get("/misuse", function()
  local ok1, e1 = pcall(db.query, db, 42)
  local ok2, e2 = pcall(db.query, db, "SELECT ?", {})
  local ok3, e3 = pcall(moonlet.db.open, "mysql://x")
  return { ok = ok1 or ok2 or ok3, errs = { e1, e2, e3 } }
end)

local function tx_route(req)
  local mode = req.query.mode
  local ok, a, b = pcall(db.transaction, db, function(tx)
    assert(tx:exec("INSERT INTO items (name, qty) VALUES (?, ?)", req.query.name, 1))
    local rows = assert(tx:query("SELECT count(*) AS n FROM items WHERE name = ?", req.query.name))
    if mode == "raise" then error("boom in tx") end
    if mode == "sleep" then moonlet.sleep(0.05) end
    if mode == "pg_sleep_raise" then   -- a statement that keeps the connection busy (PostgreSQL)
      assert(tx:query("SELECT pg_sleep(?::float) AS s", tonumber(req.query.s)))
      error("boom in tx")
    end
    return rows[1].n, "second"
  end)
  local rows = assert(db:query("SELECT count(*) AS n FROM items WHERE name = ?", req.query.name))
  return { ok = ok, a = a, b = b, after = rows[1].n }
end
app:get("/tx", tx_route)
app:get("/pool/tx", { pool = true }, tx_route)

-- db:begin(): the transaction outlives a function call (a dependency's cleanup ends it)
local function begin_route(req)
  local name, mode = req.query.name, req.query.mode
  local tx = assert(db:begin())
  assert(tx:exec("INSERT INTO items (name, qty) VALUES (?, ?)", name, 1))
  local ok, res
  if mode == "rollback" then ok = tx:rollback() else ok = tx:commit() end
  local again = { pcall(tx.exec, tx, "SELECT 1") }
  local nested = { pcall(db.transaction, db, function(t2) return t2:commit() end) }
  if mode == "drop" then   -- never finished: collected, rolled back
    local t3 = assert(db:begin())
    assert(t3:exec("INSERT INTO items (name, qty) VALUES (?, ?)", name .. "-dropped", 1))
    t3 = nil   -- luacheck: ignore
    collectgarbage()
    collectgarbage()
  end
  res = assert(db:query("SELECT count(*) AS n FROM items WHERE name = ? OR name = ?",
                        name, name .. "-dropped"))
  return { ok = ok, after = res[1].n, again = again[2], nested = nested[2] }
end
app:get("/begin", begin_route)
app:get("/pool/begin", { pool = true }, begin_route)

-- a statement that keeps the database busy for a while
app:get("/slow", function(req)
  local n = tonumber(req.query.n) or 3000000
  local res, err
  if pg then
    res, err = db:query("SELECT pg_sleep(?::float) AS s, 'slow-query-marker' AS m", tonumber(req.query.s) or 5)
  else
    res, err = db:query([[WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?)
                          SELECT count(*) AS n FROM c]], n)
  end
  return { res = res, err = err }
end)

app:get("/hello", function() return { message = "hello" } end)

return app
