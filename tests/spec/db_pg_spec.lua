-- moonlet.db over PostgreSQL: a throwaway cluster (tests/support/pg.lua) and
-- tests/apps/db served with DB_URL pointing at it.
local t = require "moonlet.testing"
local cjson = require "cjson"

local function q(srv, sql, params, opts)
  opts = opts or {}
  local body = cjson.encode({ sql = sql, params = params, exec = opts.exec })
  local res = assert(t.request(srv.port, "POST", opts.path or "/q", { body = body }))
  eq(res.status, 200, res.body)
  return res:json()
end

describe("postgres", function()
  local pg, srv
  before_all(function()
    pg = require("tests.support.pg").start()
    srv = t.server{ app = "tests/apps/db", args = { "--pool-size", "2" },
                    env = { DB_URL = pg.url, DB_POOL = "4" } }
  end)
  after_all(function()
    if srv then srv:stop() end
    if pg then pg:stop() end
  end)

  it("execs and queries, converting types by OID, NULL as moonlet.null", function()
    eq(q(srv, "INSERT INTO items (name, qty, price, ok) VALUES (?, ?, ?, ?) RETURNING id",
         { "apple", 3, 1.5, true }, { exec = true }).res, { changes = 1, last_id = 1 })
    eq(q(srv, "INSERT INTO items (name, qty) VALUES (?, ?)", { "pear", t.null }, { exec = true }).res,
       { changes = 1 })
    eq(q(srv, "SELECT id, name, qty, price, ok FROM items ORDER BY id").res, {
      { id = 1, name = "apple", qty = 3, price = 1.5, ok = true },
      { id = 2, name = "pear", qty = t.null, price = t.null, ok = t.null },
    })
    eq(q(srv, "SELECT 1::int2 AS a, 2::int8 AS b, 2.5::float4 AS c, 1.25::numeric AS d, "
              .. "false AS e, 'x'::text AS f, '2024-01-02'::date AS g").res,
       { { a = 1, b = 2, c = 2.5, d = 1.25, e = false, f = "x", g = "2024-01-02" } })
    eq(q(srv, "UPDATE items SET qty = qty WHERE id > ?", { 0 }, { exec = true }).res, { changes = 2 })
    local res = assert(t.request(srv.port, "POST", "/q",
                                 { body = '{"sql":"SELECT * FROM items WHERE id < 0"}' }))
    eq(res.body, '{"res":[]}')
  end)

  it("binds parameters, never interpolates them; ? in literals and ?? stay", function()
    local evil = "x'); DROP TABLE items; -- ? \"?\""
    eq(q(srv, "INSERT INTO items (name) VALUES (?)", { evil }, { exec = true }).res.changes, 1)
    eq(q(srv, "SELECT name, 'lit?' AS l, ?::text AS p FROM items WHERE name = ? -- what?",
         { "a?b", evil }).res, { { name = evil, l = "lit?", p = "a?b" } })
    eq(q(srv, [[SELECT '{"a":1}'::jsonb ?? 'a' AS has, $$dollar?$$ AS d, ?::int + 1 AS n]], { 41 }).res,
       { { has = true, d = "dollar?", n = 42 } })
  end)

  it("returns nil, err on SQL errors and parameter mismatches", function()
    eq(q(srv, "SELECT * FROM missing_table").err, 'relation "missing_table" does not exist')
    match(q(srv, "SELEC 1").err, "syntax error")
    eq(q(srv, "SELECT ? AS a", {}).err, "expected 1 parameter(s), got 0")
    eq(q(srv, "SELECT 1 AS one").res, { { one = 1 } })   -- the connection is fine afterwards
  end)

  it("commits transactions and rolls back on errors", function()
    eq(assert(t.request(srv.port, "GET", "/tx?name=c1")):json(),
       { ok = true, a = 1, b = "second", after = 1 })
    local r = assert(t.request(srv.port, "GET", "/tx?name=r1&mode=raise")):json()
    eq(r.ok, false)
    match(r.a, "boom in tx")
    eq(r.after, 0)
  end)

  it("works the same from a pooled route", function()
    eq(q(srv, "SELECT ?::text AS v", { "pooled" }, { path = "/pool/q" }).res, { { v = "pooled" } })
    eq(assert(t.request(srv.port, "GET", "/pool/tx?name=p1")):json(),
       { ok = true, a = 1, b = "second", after = 1 })
    match(q(srv, "SELECT * FROM nope", nil, { path = "/pool/q" }).err, "does not exist")
  end)

  it("queues queries for a free connection when the pool is exhausted", function()
    local one = t.server{ app = "tests/apps/db", env = { DB_URL = pg.url, DB_POOL = "1" } }
    local t0 = t.now()
    local r = t.concurrent(one.port, 10, "GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    eq(r.ok, 10)
    ok(t.now() - t0 >= 0.95, "10 queries of 0.1 s on one connection took " .. (t.now() - t0) .. " s")
    r = t.concurrent(one.port, 20, "GET /tx?name=one&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    eq(r.ok, 20)
    eq(q(one, "SELECT count(*) AS n FROM items WHERE name = 'one'").res, { { n = 20 } })
    one:stop()
  end)

  it("reconnects after the server restarts", function()
    eq(q(srv, "SELECT 1 AS one").res, { { one = 1 } })
    pg:restart()
    -- idle connections died with the old server: they are replaced, not used
    eq(q(srv, "SELECT 2 AS two").res, { { two = 2 } })
    eq(q(srv, "SELECT 3 AS three", nil, { path = "/pool/q" }).res, { { three = 3 } })
  end)

  it("fails a query cut by a restart with nil, err, then recovers", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.3)
    pg:restart()
    local res = assert(c:read_response(10))
    ok(res:json().err, "expected an error, got " .. res.body)
    c:close()
    eq(q(srv, "SELECT 4 AS four").res, { { four = 4 } })
  end)

  it("cancels the query of a client that disconnects", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    local active = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                   .. "AND query LIKE '%slow-query-marker%' AND pid <> pg_backend_pid()"
    local deadline = t.now() + 3
    while pg:psql(active):match("%d+") ~= "1" and t.now() < deadline do t.sleep(0.05) end
    eq(pg:psql(active):match("%d+"), "1")
    c:reset()
    deadline = t.now() + 3
    while pg:psql(active):match("%d+") ~= "0" and t.now() < deadline do t.sleep(0.05) end
    eq(pg:psql(active):match("%d+"), "0", "the query still runs on the server")
    -- and every connection serves again at once
    local t0 = t.now()
    local r = t.concurrent(srv.port, 8, "GET /slow?s=0 HTTP/1.1\r\nHost: x\r\n\r\n", 10)
    eq(r.ok, 8)
    ok(t.now() - t0 < 1, "a connection stayed busy after the cancel")
  end)

  it("runs apps/todo end to end", function()
    pg:psql("CREATE DATABASE todo OWNER moonlet")
    local url = pg.url:gsub("/moonlet_test%?", "/todo?")
    local dir = t.tmpdir()
    local here = assert(io.popen("pwd")):read("*l")
    local todo = t.server{ app = here .. "/apps/todo", cwd = dir, env = { DATABASE_URL = url } }
    require("tests.apps.db.todo_e2e")(todo.port)
    todo:stop()
    ok(not io.open(dir .. "/todo.db"), "the PostgreSQL run must not create todo.db")
    eq(pg:psql("SELECT count(*) FROM todos", "todo"):match("%d+"), "1")
  end)
end)
