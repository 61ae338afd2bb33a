-- moonlet.db over SQLite: tests/apps/db served with DB_URL=sqlite:<temp file> or :memory:.
local t = require "moonlet.testing"
local cjson = require "cjson"

local function q(srv, sql, params, opts)
  opts = opts or {}
  local body = cjson.encode({ sql = sql, params = params, exec = opts.exec })
  local res = assert(t.request(srv.port, "POST", opts.path or "/q", { body = body }))
  eq(res.status, 200, res.body)
  return res:json()
end

describe("sqlite", function()
  local srv, dir
  before_all(function()
    dir = t.tmpdir()
    srv = t.server{ app = "tests/apps/db", args = { "--pool-size", "2" },
                    env = { DB_URL = "sqlite:" .. dir .. "/test.db", DB_POOL = "4" } }
  end)
  after_all(function() srv:stop() end)

  it("execs and queries with types and NULL", function()
    eq(q(srv, "INSERT INTO items (name, qty, price, ok) VALUES (?, ?, ?, ?)",
         { "apple", 3, 1.5, true }, { exec = true }).res, { changes = 1, last_id = 1 })
    eq(q(srv, "INSERT INTO items (name, qty) VALUES (?, ?)", { "pear", t.null }, { exec = true }).res,
       { changes = 1, last_id = 2 })
    eq(q(srv, "SELECT id, name, qty, price, ok FROM items ORDER BY id").res, {
      { id = 1, name = "apple", qty = 3, price = 1.5, ok = 1 },
      { id = 2, name = "pear", qty = t.null, price = t.null, ok = t.null },
    })
    eq(q(srv, "UPDATE items SET qty = qty WHERE id > ?", { 0 }, { exec = true }).res, { changes = 2 })
    local res = assert(t.request(srv.port, "POST", "/q",
                                 { body = '{"sql":"SELECT * FROM items WHERE id < 0"}' }))
    eq(res.body, '{"res":[]}')
  end)

  it("binds parameters, never interpolates them", function()
    local evil = "x'); DROP TABLE items; -- ? \"?\""
    eq(q(srv, "INSERT INTO items (name) VALUES (?)", { evil }, { exec = true }).res.changes, 1)
    eq(q(srv, "SELECT name, ? AS lit FROM items WHERE name = ?", { "a?b", evil }).res,
       { { name = evil, lit = "a?b" } })
    eq(q(srv, "SELECT 1.25 AS f, 9007199254740991 AS big, 'x' || ? AS s", { 7 }).res,
       { { f = 1.25, big = 9007199254740991, s = "x7" } })
  end)

  it("returns nil, err on SQL errors and parameter mismatches", function()
    match(q(srv, "SELECT * FROM missing_table").err, "no such table: missing_table")
    match(q(srv, "SELEC 1").err, "syntax error")
    match(q(srv, "SELECT ? AS a", {}).err, "expected 1 parameter")
  end)

  it("raises on wrong argument types", function()
    local r = assert(t.request(srv.port, "GET", "/misuse")):json()
    eq(r.ok, false)
    match(r.errs[1], "bad argument #1 to 'query'")
    match(r.errs[2], "bad parameter #1")
    match(r.errs[3], "bad argument #1 to 'open'")
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
    eq(q(srv, "SELECT ? AS v", { "pooled" }, { path = "/pool/q" }).res, { { v = "pooled" } })
    eq(assert(t.request(srv.port, "GET", "/pool/tx?name=p1")):json(),
       { ok = true, a = 1, b = "second", after = 1 })
    -- a row written by a pool thread's connection is seen by the loop's
    eq(q(srv, "SELECT count(*) AS n FROM items WHERE name = 'p1'").res, { { n = 1 } })
  end)

  it("queues concurrent transactions on a small pool and all succeed", function()
    local r = t.concurrent(srv.port, 20, "GET /tx?name=conc&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    eq(r.ok, 20)
    eq(q(srv, "SELECT count(*) AS n FROM items WHERE name = 'conc'").res, { { n = 20 } })
  end)

  it("never blocks the loop with a slow statement", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?n=3000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = t.now()
    local worst = 0
    for _ = 1, 10 do
      local s = t.now()
      eq(assert(t.request(srv.port, "GET", "/hello")).status, 200)
      worst = math.max(worst, t.now() - s)
    end
    ok(worst < 0.05, "a /hello took " .. worst .. " s while the statement ran")
    local res = assert(c:read_response(30))
    eq(res:json().res, { { n = 3000000 } })
    ok(t.now() - t0 > 0.1, "the slow statement was not slow enough to prove anything")
    c:close()
  end)
end)

describe("sqlite :memory:", function()
  local srv
  before_all(function()
    srv = t.server{ app = "tests/apps/db", env = { DB_URL = "sqlite::memory:" } }
  end)
  after_all(function() srv:stop() end)

  it("keeps one database on one connection", function()
    eq(q(srv, "INSERT INTO items (name) VALUES (?)", { "m" }, { exec = true }).res,
       { changes = 1, last_id = 1 })
    local r = t.concurrent(srv.port, 20, "GET /tx?name=mem&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    eq(r.ok, 20)
    eq(q(srv, "SELECT count(*) AS n FROM items").res, { { n = 21 } })
  end)

  it("interrupts a statement whose client went away", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    c:reset()
    t.sleep(0.2)
    -- the only connection is free again at once (the statement alone would take ~30 s)
    local t0 = t.now()
    eq(q(srv, "SELECT 1 AS one").res, { { one = 1 } })
    ok(t.now() - t0 < 1, "the cancelled statement still held the connection")
  end)

  it("reports last_id for every insert, also when the id repeats the previous one", function()
    local function exec(sql, ...)
      return q(srv, sql, { ... }, { exec = true }).res
    end
    -- deleting the newest row (no AUTOINCREMENT) hands its id out again
    local id = exec("INSERT INTO items (name) VALUES (?)", "newest").last_id
    eq(exec("DELETE FROM items WHERE id = ?", id), { changes = 1 })
    eq(exec("INSERT INTO items (name) VALUES (?)", "again"), { changes = 1, last_id = id })
    -- so does a rolled-back insert
    eq(assert(t.request(srv.port, "GET", "/tx?name=rolled&mode=raise")):json().after, 0)
    eq(exec("INSERT INTO items (name) VALUES (?)", "after"), { changes = 1, last_id = id + 1 })
    -- an upsert that updates inserts nothing
    eq(exec("INSERT INTO items (id, name) VALUES (?, 'u') ON CONFLICT (id) DO UPDATE SET name = 'u'",
            id + 1), { changes = 1 })
  end)
end)

describe("apps/todo on SQLite", function()
  it("creates, lists, reads, updates and deletes (todo.db in the working directory)", function()
    local dir = t.tmpdir()
    local here = assert(io.popen("pwd")):read("*l")
    local srv = t.server{ app = here .. "/apps/todo", cwd = dir,
                          env = { DATABASE_URL = false } }
    require("tests.apps.db.todo_e2e")(srv.port)
    srv:stop()
    ok(io.open(dir .. "/todo.db"), "todo.db was not created in the working directory")
  end)
end)
