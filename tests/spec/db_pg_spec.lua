-- moonlet.db over PostgreSQL: a throwaway cluster (tests/support/pg.lua) and
-- tests/apps/db served with DB_URL pointing at it.
local t = require "moonlet.testing"
local cjson = require "cjson"

local function q(srv, sql, params, opts)
  opts = opts or {}
  local body = cjson.encode({ sql = sql, params = params, exec = opts.exec })
  local res = assert(t.request(srv.port, "POST", opts.path or "/q", { body = body }))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

-- POST /batch: statements in order on one handle (in one transaction when tx).
local function batch(srv, stmts, tx)
  local res = assert(t.request(srv.port, "POST", "/batch",
                               { body = cjson.encode({ stmts = stmts, tx = tx }) }))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

describe("postgres", function()
  local pg, srv
  lazy_setup(function()
    pg = require("tests.support.pg").start()
    srv = t.server{ app = "tests/apps/db", args = { "--pool-size", "2" },
                    env = { DB_URL = pg.url, DB_POOL = "4" } }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if pg then pg:stop() end
  end)

  it("execs and queries, converting types by OID, NULL as moonlet.null", function()
    assert.are.same({ changes = 1, last_id = 1 },
                    q(srv, "INSERT INTO items (name, qty, price, ok) VALUES (?, ?, ?, ?) RETURNING id",
                      { "apple", 3, 1.5, true }, { exec = true }).res)
    assert.are.same({ changes = 1 },
                    q(srv, "INSERT INTO items (name, qty) VALUES (?, ?)", { "pear", t.null }, { exec = true }).res)
    assert.are.same({
      { id = 1, name = "apple", qty = 3, price = 1.5, ok = true },
      { id = 2, name = "pear", qty = t.null, price = t.null, ok = t.null },
    }, q(srv, "SELECT id, name, qty, price, ok FROM items ORDER BY id").res)
    assert.are.same({ { a = 1, b = 2, c = 2.5, d = 1.25, e = false, f = "x", g = "2024-01-02" } },
                    q(srv, "SELECT 1::int2 AS a, 2::int8 AS b, 2.5::float4 AS c, 1.25::numeric AS d, "
                           .. "false AS e, 'x'::text AS f, '2024-01-02'::date AS g").res)
    assert.are.same({ changes = 2 },
                    q(srv, "UPDATE items SET qty = qty WHERE id > ?", { 0 }, { exec = true }).res)
    local res = assert(t.request(srv.port, "POST", "/q",
                                 { body = '{"sql":"SELECT * FROM items WHERE id < 0"}' }))
    assert.are.same('{"res":[]}', res.body)
  end)

  it("binds parameters, never interpolates them; ? in literals and ?? stay", function()
    local evil = "x'); DROP TABLE items; -- ? \"?\""
    assert.are.same(1,
                    q(srv, "INSERT INTO items (name) VALUES (?)", { evil }, { exec = true }).res.changes)
    assert.are.same({ { name = evil, l = "lit?", p = "a?b" } },
                    q(srv, "SELECT name, 'lit?' AS l, ?::text AS p FROM items WHERE name = ? -- what?",
                      { "a?b", evil }).res)
    assert.are.same({ { has = true, d = "dollar?", n = 42 } },
                    q(srv, [[SELECT '{"a":1}'::jsonb ?? 'a' AS has, $$dollar?$$ AS d, ?::int + 1 AS n]], { 41 }).res)
  end)

  it("returns nil, err on SQL errors and parameter mismatches", function()
    assert.are.same('relation "missing_table" does not exist',
                    q(srv, "SELECT * FROM missing_table").err)
    assert.matches("syntax error", q(srv, "SELEC 1").err)
    assert.are.same("expected 1 parameter(s), got 0", q(srv, "SELECT ? AS a", {}).err)
    assert.are.same({ { one = 1 } },
                    q(srv, "SELECT 1 AS one").res)   -- the connection is fine afterwards
  end)

  it("commits transactions and rolls back on errors", function()
    assert.are.same({ ok = true, a = 1, b = "second", after = 1 },
                    assert(t.request(srv.port, "GET", "/tx?name=c1")):json())
    local r = assert(t.request(srv.port, "GET", "/tx?name=r1&mode=raise")):json()
    assert.are.same(false, r.ok)
    assert.matches("boom in tx", r.a)
    assert.are.same(0, r.after)
  end)

  it("keeps a db:begin() transaction until tx:commit() or tx:rollback()", function()
    require("tests.apps.db.begin_checks")(srv.port)
  end)

  it("works the same from a pooled route", function()
    assert.are.same({ { v = "pooled" } },
                    q(srv, "SELECT ?::text AS v", { "pooled" }, { path = "/pool/q" }).res)
    assert.are.same({ ok = true, a = 1, b = "second", after = 1 },
                    assert(t.request(srv.port, "GET", "/pool/tx?name=p1")):json())
    assert.matches("does not exist", q(srv, "SELECT * FROM nope", nil, { path = "/pool/q" }).err)
  end)

  it("queues queries for a free connection when the pool is exhausted", function()
    local one = t.server{ app = "tests/apps/db", env = { DB_URL = pg.url, DB_POOL = "1" } }
    local t0 = t.now()
    local r = t.concurrent(one.port, 10, "GET /slow?s=0.1 HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(10, r.ok)
    assert.is_truthy(t.now() - t0 >= 0.95,
                     "10 queries of 0.1 s on one connection took " .. (t.now() - t0) .. " s")
    r = t.concurrent(one.port, 20, "GET /tx?name=one&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(20, r.ok)
    assert.are.same({ { n = 20 } },
                    q(one, "SELECT count(*) AS n FROM items WHERE name = 'one'").res)
    one:stop()
  end)

  it("reconnects after the server restarts", function()
    assert.are.same({ { one = 1 } }, q(srv, "SELECT 1 AS one").res)
    pg:restart()
    -- idle connections died with the old server: they are replaced, not used
    assert.are.same({ { two = 2 } }, q(srv, "SELECT 2 AS two").res)
    assert.are.same({ { three = 3 } }, q(srv, "SELECT 3 AS three", nil, { path = "/pool/q" }).res)
  end)

  it("fails a query cut by a restart with nil, err, then recovers", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.3)
    pg:restart()
    local res = assert(c:read_response(10))
    assert.is_truthy(res:json().err, "expected an error, got " .. res.body)
    c:close()
    assert.are.same({ { four = 4 } }, q(srv, "SELECT 4 AS four").res)
  end)

  it("cancels the query of a client that disconnects", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    local active = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                   .. "AND query LIKE '%slow-query-marker%' AND pid <> pg_backend_pid()"
    local deadline = t.now() + 3
    while pg:psql(active):match("%d+") ~= "1" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same("1", pg:psql(active):match("%d+"))
    c:reset()
    deadline = t.now() + 3
    while pg:psql(active):match("%d+") ~= "0" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same("0", pg:psql(active):match("%d+"), "the query still runs on the server")
    -- and every connection serves again at once
    local t0 = t.now()
    local r = t.concurrent(srv.port, 8, "GET /slow?s=0 HTTP/1.1\r\nHost: x\r\n\r\n", 10)
    assert.are.same(8, r.ok)
    assert.is_truthy(t.now() - t0 < 1, "a connection stayed busy after the cancel")
  end)

  describe("statement cache (one connection)", function()
    local one
    lazy_setup(function()
      one = t.server{ app = "tests/apps/db", env = { DB_URL = pg.url, DB_POOL = "1" } }
    end)
    lazy_teardown(function()
      if one then one:stop() end
    end)

    it("prepares a statement once, then runs it by name", function()
      local stmts = {}
      for i = 1, 50 do stmts[i] = { sql = "SELECT ?::int + 1 AS n, 'hit' AS tag", params = { i } } end
      stmts[51] = { sql = "SELECT statement, generic_plans + custom_plans AS runs "
                          .. "FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1::int + 1 %'" }
      local out = batch(one, stmts).out
      for i = 1, 50 do assert.are.same({ { n = i + 1, tag = "hit" } }, out[i].res) end
      assert.are.same({ { statement = "SELECT $1::int + 1 AS n, 'hit' AS tag", runs = 50 } },
                      out[51].res)
      -- and again over several requests: still one statement, run 100 times
      out = batch(one, stmts).out
      assert.are.same({ { statement = "SELECT $1::int + 1 AS n, 'hit' AS tag", runs = 100 } },
                      out[51].res)
    end)

    it("keeps at most 256 statements per connection, least recently used out", function()
      local count = { sql = "SELECT count(*) AS n FROM pg_prepared_statements WHERE name LIKE 'moonlet\\_%'" }
      local stmts = {}
      for k = 1, 300 do stmts[k] = { sql = "SELECT ?::int + " .. k .. " AS n", params = { 1 } } end
      stmts[301] = count
      local out = batch(one, stmts).out
      for k = 1, 300 do assert.are.same({ { n = k + 1 } }, out[k].res) end
      assert.is_truthy(out[301].res[1].n <= 256, "prepared " .. out[301].res[1].n)
      assert.is_truthy(out[301].res[1].n >= 200, "prepared " .. out[301].res[1].n)
      -- the evicted ones are prepared again, the recent ones are still there
      out = batch(one, { stmts[1], stmts[2], stmts[300], count }).out
      assert.are.same({ { n = 2 } }, out[1].res)
      assert.are.same({ { n = 3 } }, out[2].res)
      assert.are.same({ { n = 301 } }, out[3].res)
      assert.is_truthy(out[4].res[1].n <= 256, "prepared " .. out[4].res[1].n)
      -- inside a transaction (no DEALLOCATE there): past the bound they run unnamed
      stmts = {}
      for k = 1, 300 do stmts[k] = { sql = "SELECT ?::int * " .. k .. " AS n", params = { 2 } } end
      stmts[301] = count
      local r = batch(one, stmts, true)
      for k = 1, 300 do assert.are.same({ { n = 2 * k } }, r.out[k].res) end
      assert.is_truthy(r.out[301].res[1].n <= 256, "prepared " .. r.out[301].res[1].n)
    end)

    it("prepares a statement again when its table changed shape", function()
      local sel = { sql = "SELECT * FROM reprep WHERE ?::int > 0", params = { 1 } }
      local out = batch(one, {
        { sql = "DROP TABLE IF EXISTS reprep; CREATE TABLE reprep (v integer); "
                .. "INSERT INTO reprep VALUES (7)", exec = true },
        sel, sel,
        { sql = "DROP TABLE reprep; CREATE TABLE reprep (v text); INSERT INTO reprep VALUES ('seven')",
          exec = true },
        sel, sel,
        { sql = "ALTER TABLE reprep ALTER COLUMN v TYPE numeric USING 7.5", exec = true },
        sel,
        { sql = "SELECT * FROM reprep" },
        { sql = "ALTER TABLE reprep ADD COLUMN w int DEFAULT 3", exec = true },
        { sql = "SELECT * FROM reprep" },
      }).out
      assert.are.same(nil, out[1].err)
      assert.are.same({ { v = 7 } }, out[2].res)
      assert.are.same({ { v = 7 } }, out[3].res)
      assert.are.same({ { v = "seven" } }, out[5].res)
      assert.are.same({ { v = "seven" } }, out[6].res)
      assert.are.same({ { v = 7.5 } }, out[8].res)
      assert.are.same({ { v = 7.5 } }, out[9].res)
      assert.are.same({ { v = 7.5, w = 3 } }, out[11].res)
      -- inside a transaction the statement fails (PostgreSQL aborts the transaction, and
      -- db:transaction reports that nothing was committed) ...
      assert.are.same(nil,
                      batch(one, { { sql = "ALTER TABLE reprep ALTER COLUMN v TYPE text", exec = true } }).out[1].err)
      local r = batch(one, { sel }, true)
      assert.matches("transaction rolled back: a statement in it failed", r.err)
      -- ... and the next run outside one prepares it again
      assert.are.same({ { v = "7.5", w = 3 } }, batch(one, { sel }).out[1].res)
      -- statements that vanished from the server (DEALLOCATE ALL) are prepared again
      out = batch(one, { sel, { sql = "DEALLOCATE ALL", exec = true }, sel, sel,
                         { sql = "DEALLOCATE ALL", exec = true } }).out
      assert.are.same({ { v = "7.5", w = 3 } }, out[1].res)
      assert.are.same(nil, out[2].err)
      assert.are.same({ { v = "7.5", w = 3 } }, out[3].res)
      assert.are.same({ { v = "7.5", w = 3 } }, out[4].res)
      assert.are.same(nil, out[5].err)
    end)

    it("runs scripts of several commands with the simple protocol", function()
      local out = batch(one, {
        { sql = "DROP TABLE IF EXISTS script; CREATE TABLE script (a int);\n"
                .. "INSERT INTO script VALUES (1); INSERT INTO script VALUES (2); -- done", exec = true },
        { sql = "SELECT count(*) AS n FROM script" },
        { sql = "SELECT 'a;b' AS s, ?::text AS p;", params = { ";" } },
        { sql = "SELECT 1 AS one; ; -- trailing" },
        { sql = "SELECT 1 AS one; SELECT ?::int AS two", params = { 2 } },
        { sql = "SELECT 1 AS a; SELECT 2 AS b" },
        { sql = "INSERT INTO script VALUES (3); SELEC 4", exec = true },
        { sql = "SELECT count(*) AS n FROM script" },
      }).out
      assert.are.same({ changes = 1 }, out[1].res)   -- the last command's, as before
      assert.are.same({ { n = 2 } }, out[2].res)
      assert.are.same({ { s = "a;b", p = ";" } }, out[3].res)
      assert.are.same({ { one = 1 } }, out[4].res)
      assert.matches("multiple commands", out[5].err)
      assert.are.same({ { b = 2 } }, out[6].res)   -- the last command's rows, as before
      assert.matches("syntax error", out[7].err)
      assert.are.same({ { n = 2 } }, out[8].res)   -- nothing of a script that does not parse runs
    end)
  end)

  describe("pipelining (one connection, up to 8 statements on it)", function()
    local pl, mport
    local active = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                   .. "AND query LIKE '%slow-query-marker%' AND pid <> pg_backend_pid()"
    lazy_setup(function()
      mport = t.free_port()
      pl = t.server{ app = "tests/apps/db", args = { "--metrics-port", tostring(mport) },
                     env = { DB_URL = pg.url, DB_POOL = "1", DB_PIPELINE = "8" } }
    end)
    lazy_teardown(function()
      if pl then pl:stop() end
    end)

    -- POST /q on a connection of its own, not read yet
    local function send_q(sql, params)
      local c = t.connect(pl.port)
      local body = cjson.encode({ sql = sql, params = params })
      c:send("POST /q HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      return c
    end

    -- the answer of send_q's or slow's request (the connection closes)
    local function answer(c)
      local res = assert(c:read_response(10))
      assert.are.same(200, res.status, res.body)
      c:close()
      return res:json()
    end

    local function waiting()
      local res = assert(t.request(mport, "GET", "/metrics", { timeout = 5 }))
      return tonumber(res.body:match("\nmoonlet_db_waiting (%S+)"))
    end

    -- GET /slow?s=S on a connection of its own, once its statement runs on the server
    local function slow(s)
      local c = t.connect(pl.port)
      c:send("GET /slow?s=" .. s .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local deadline = t.now() + 3
      while pg:psql(active):match("%d+") ~= "1" and t.now() < deadline do t.sleep(0.02) end
      assert.are.same("1", pg:psql(active):match("%d+"))
      return c
    end

    it("sends statements behind a busy connection's, each answered with its own rows", function()
      local sql = "SELECT ?::int * 2 AS n"
      q(pl, sql, { 0 })   -- prepared on the connection: only then is it pipelined
      local head = slow(0.8)
      local cs = {}
      for i = 1, 20 do cs[i] = send_q(sql, { i }) end
      -- 7 went behind the running one (8 at most on a connection), 13 wait in line
      local deadline = t.now() + 3
      while waiting() ~= 13 and t.now() < deadline do t.sleep(0.02) end
      assert.are.same(13, waiting())
      for i = 1, 20 do assert.are.same({ res = { { n = 2 * i } } }, answer(cs[i])) end
      assert.are.same("slow-query-marker", answer(head).res[1].m)
      assert.are.same(0, waiting())
      -- statements that could change the transaction state are not pipelined
      head = slow(0.5)
      cs = {}
      for i = 1, 3 do cs[i] = send_q("SET application_name = 'moonlet'") end
      deadline = t.now() + 3
      while waiting() ~= 3 and t.now() < deadline do t.sleep(0.02) end
      assert.are.same(3, waiting())
      for i = 1, 3 do assert.are.same({ res = {} }, answer(cs[i])) end
      answer(head)
    end)

    it("queues statements behind a transaction waiting for the connection (never starved)", function()
      local sql = "SELECT ?::int - 1 AS n"
      q(pl, sql, { 0 })
      local head = slow(0.8)
      local tx = t.connect(pl.port)
      tx:send("GET /tx?name=behind HTTP/1.1\r\nHost: x\r\n\r\n")
      local deadline = t.now() + 3
      while waiting() ~= 1 and t.now() < deadline do t.sleep(0.02) end
      assert.are.same(1, waiting())
      -- the transaction waits for the connection: these wait behind it, not on the pipeline
      local cs = {}
      for i = 1, 3 do cs[i] = send_q(sql, { i }) end
      deadline = t.now() + 3
      while waiting() ~= 4 and t.now() < deadline do t.sleep(0.02) end
      assert.are.same(4, waiting())
      assert.are.same({ ok = true, a = 1, b = "second", after = 1 },
                      assert(tx:read_response(10)):json())
      tx:close()
      for i = 1, 3 do assert.are.same({ res = { { n = i - 1 } } }, answer(cs[i])) end
      answer(head)
    end)

    it("fails only the pipelined statement that fails", function()
      local sql = "SELECT 10 / ?::int AS r"
      q(pl, sql, { 1 })
      local head = slow(0.3)
      local cs, div = {}, { 1, 0, 2, 0, 5 }
      for i, d in ipairs(div) do cs[i] = send_q(sql, { d }) end
      local out = {}
      for i = 1, #div do out[i] = answer(cs[i]) end
      assert.are.same({ res = { { r = 10 } } }, out[1])
      assert.are.same({ err = "division by zero" }, out[2])
      assert.are.same({ res = { { r = 5 } } }, out[3])
      assert.are.same({ err = "division by zero" }, out[4])
      assert.are.same({ res = { { r = 2 } } }, out[5])
      assert.are.same("slow-query-marker", answer(head).res[1].m)
    end)

    it("throws away the outcome of a pipelined statement whose client left, cancels nothing",
       function()
      local sql = "SELECT ?::int + 100 AS n"
      q(pl, sql, { 0 })
      local head = slow(0.5)
      local b, c, d = send_q(sql, { 1 }), send_q(sql, { 2 }), send_q(sql, { 3 })
      t.sleep(0.1)
      c:reset()   -- behind the running statement: it is not cancelled on the server
      assert.are.same({ res = { { n = 101 } } }, answer(b))
      assert.are.same({ res = { { n = 103 } } }, answer(d))
      assert.are.same("slow-query-marker", answer(head).res[1].m)
      -- the running statement, with others behind it, runs to its end
      head = slow(2)
      b = send_q(sql, { 4 })
      t.sleep(0.1)
      -- the server read b's request before this one's (a loaded machine may delay both)
      assert.are.same(200, assert(t.request(pl.port, "GET", "/hello")).status)
      head:reset()
      t.sleep(0.1)
      assert.are.same("1", pg:psql(active):match("%d+"))
      assert.are.same({ res = { { n = 104 } } }, answer(b))
      assert.are.same({ { n = 105 } }, q(pl, sql, { 5 }).res)
    end)

    it("sends nothing on a transaction's connection", function()
      local sql = "SELECT count(*) AS n FROM items WHERE name = ?"
      q(pl, sql, { "iso" })
      -- the transaction inserts 'iso', runs pg_sleep (its connection busy), raises: rolled back
      local tx = t.connect(pl.port)
      tx:send("GET /tx?name=iso&mode=pg_sleep_raise&s=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
      t.sleep(0.15)
      local cs = {}
      for i = 1, 5 do cs[i] = send_q(sql, { "iso" }) end
      local r = assert(tx:read_response(10)):json()
      tx:close()
      assert.are.same(false, r.ok)
      for i = 1, 5 do assert.are.same({ res = { { n = 0 } } }, answer(cs[i])) end
    end)

    -- POST /par: the statements at once, from tasks of one request (one loop turn)
    local function par(stmts)
      local res = assert(t.request(pl.port, "POST", "/par",
                                   { body = cjson.encode({ stmts = stmts }), timeout = 10 }))
      assert.are.same(200, res.status, res.body)
      return res:json().out
    end

    it("sends the read-only statements of one loop turn with one Sync (one transaction)",
       function()
      local sql = "SELECT now()::text AS t, ?::int AS i"
      q(pl, sql, { 0 })
      local stmts = {}
      for i = 1, 8 do stmts[i] = { sql = sql, params = { i } } end
      local out, seen, n = par(stmts), {}, 0
      for i = 1, 8 do
        assert.are.same(i, out[i].res[1].i)
        if not seen[out[i].res[1].t] then n = n + 1 end
        seen[out[i].res[1].t] = true
      end
      -- the first runs alone on the idle connection; the 7 behind it share a transaction
      assert.are.same(2, n)
      assert.are_not.same(out[1].res[1].t, out[2].res[1].t)
      for i = 3, 8 do assert.are.same(out[2].res[1].t, out[i].res[1].t) end
    end)

    it("answers the others of a batch whose statement fails (sent again: they never ran)",
       function()
      local sql = "SELECT 100 / ?::int AS r"
      q(pl, sql, { 1 })
      local stmts = {}
      for i = 1, 20 do stmts[i] = { sql = sql, params = { i == 5 and 0 or i } } end
      local out = par(stmts)
      for i = 1, 20 do
        if i == 5 then assert.are.same({ err = "division by zero" }, out[i])
        else
          assert.are.same({ res = { { r = math.floor(100 / i) } } }, out[i], "statement " .. i)
        end
      end
    end)

    it("never puts a write in a batch: a failure after it rolls nothing back", function()
      q(pl, "CREATE TABLE IF NOT EXISTS plw (v integer)", nil, { exec = true })
      local sel, ins = "SELECT 100 / ?::int AS r", "INSERT INTO plw VALUES (?) RETURNING v"
      local fn = "SELECT count(*) AS n FROM plw WHERE v = ? AND nextval('items_id_seq') > 0"
      q(pl, sel, { 1 })
      q(pl, ins, { 0 }, { exec = true })
      q(pl, fn, { 0 })
      local out = par({ { sql = sel, params = { 1 } }, { sql = sel, params = { 2 } },
                        { sql = ins, params = { 41 }, exec = true }, { sql = sel, params = { 0 } },
                        { sql = fn, params = { 41 } }, { sql = sel, params = { 0 } },
                        { sql = sel, params = { 4 } } })
      assert.are.same({ res = { { r = 100 } } }, out[1])
      assert.are.same({ res = { { r = 50 } } }, out[2])
      assert.are.same(1, out[3].res.changes)
      assert.are.same({ err = "division by zero" }, out[4])
      assert.are.same({ res = { { n = 1 } } }, out[5])
      assert.are.same({ err = "division by zero" }, out[6])
      assert.are.same({ res = { { r = 25 } } }, out[7])
      assert.are.same({ { n = 1 } }, q(pl, "SELECT count(*) AS n FROM plw WHERE v = 41").res)
    end)

    it("answers mixed batches from several clients at once: reads, failures, writes", function()
      q(pl, "CREATE TABLE IF NOT EXISTS plmix (v integer)", nil, { exec = true })
      local sel, ins = "SELECT 1000 / ?::int AS r", "INSERT INTO plmix VALUES (?) RETURNING v"
      q(pl, sel, { 1 })
      q(pl, ins, { 0 }, { exec = true })
      local writes = 1
      for round = 1, 5 do
        local cs, wants = {}, {}
        for k = 1, 6 do
          local stmts, want = {}, {}
          for i = 1, 20 do
            local x = (round * 7 + k * 5 + i * 3) % 11
            if x == 0 then
              stmts[i], want[i] = { sql = sel, params = { 0 } }, { err = "division by zero" }
            elseif x == 1 then
              stmts[i] = { sql = ins, params = { round * 1000 + k * 100 + i }, exec = true }
              want[i] = { res = { changes = 1 } }
              writes = writes + 1
            else
              stmts[i] = { sql = sel, params = { x } }
              want[i] = { res = { { r = math.floor(1000 / x) } } }
            end
          end
          local body = cjson.encode({ stmts = stmts })
          cs[k], wants[k] = t.connect(pl.port), want
          cs[k]:send("POST /par HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n"
                     .. body)
        end
        for k = 1, 6 do assert.are.same({ out = wants[k] }, answer(cs[k])) end
      end
      assert.are.same({ { n = writes } }, q(pl, "SELECT count(*)::int AS n FROM plmix").res)
    end)

    it("keeps its count of a batch whose client left before its Sync went", function()
      local sql = "SELECT ?::int + 1000 AS n"
      q(pl, sql, { 0 })
      for _ = 1, 3 do
        local stmts = { { sql = "SELECT pg_sleep(0.3)" } }
        for i = 2, 8 do stmts[i] = { sql = sql, params = { i } } end
        local c = t.connect(pl.port)
        local body = cjson.encode({ stmts = stmts })
        c:send("POST /par HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n"
               .. body)
        t.sleep(0.1)
        c:reset()
      end
      local stmts = {}
      for i = 1, 12 do stmts[i] = { sql = sql, params = { i } } end
      local out = par(stmts)
      for i = 1, 12 do assert.are.same({ res = { { n = 1000 + i } } }, out[i]) end
      assert.are.same({ { n = 1099 } }, q(pl, sql, { 99 }).res)
    end)

    it("sends a statement again, unnamed, when its table changed shape under the pipeline",
       function()
      q(pl, "DROP TABLE IF EXISTS plshape; CREATE TABLE plshape (v integer); "
            .. "INSERT INTO plshape VALUES (7)", nil, { exec = true })
      local sql = "SELECT * FROM plshape WHERE ?::int > 0"
      assert.are.same({ { v = 7 } }, q(pl, sql, { 1 }).res)
      local head = slow(0.5)
      local cs = {}
      for i = 1, 4 do cs[i] = send_q(sql, { i }) end
      t.sleep(0.1)
      pg:psql("ALTER TABLE plshape ALTER COLUMN v TYPE text USING 'seven'", "moonlet_test")
      for i = 1, 4 do assert.are.same({ res = { { v = "seven" } } }, answer(cs[i])) end
      answer(head)
      -- and the next statement on the idle connection prepares it again
      assert.are.same({ { v = "seven" } }, q(pl, sql, { 1 }).res)
      assert.are.same({ { v = "seven" } }, q(pl, sql, { 1 }).res)
    end)
  end)

  it("runs apps/todo end to end", function()
    pg:psql("CREATE DATABASE todo OWNER moonlet")
    local url = pg.url:gsub("/moonlet_test%?", "/todo?")
    local dir = t.tmpdir()
    local here = assert(io.popen("pwd")):read("*l")
    local todo = t.server{ app = here .. "/apps/todo", cwd = dir, env = { DATABASE_URL = url } }
    require("tests.apps.db.todo_e2e")(todo.port)
    todo:stop()
    assert.is_truthy(not io.open(dir .. "/todo.db"), "the PostgreSQL run must not create todo.db")
    assert.are.same("2", pg:psql("SELECT count(*) FROM todos", "todo"):match("%d+"))
  end)
end)
