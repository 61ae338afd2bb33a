-- moonlet.db over SQLite: tests/apps/db served with DB_URL=sqlite:<temp file> or :memory:.
local t = require "moonlet.testing"
local cjson = require "cjson"

local function q(srv, sql, params, opts)
  opts = opts or {}
  local body = cjson.encode({ sql = sql, params = params, exec = opts.exec })
  local res = assert(t.request(srv.port, "POST", opts.path or "/q", { body = body }))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

describe("sqlite", function()
  local srv, dir
  lazy_setup(function()
    dir = t.tmpdir()
    srv = t.server{ app = "tests/apps/db", args = { "--pool-size", "2" },
                    env = { DB_URL = "sqlite:" .. dir .. "/test.db", DB_POOL = "4" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("execs and queries with types and NULL", function()
    assert.are.same({ changes = 1, last_id = 1 },
                    q(srv, "INSERT INTO items (name, qty, price, ok) VALUES (?, ?, ?, ?)",
                      { "apple", 3, 1.5, true }, { exec = true }).res)
    assert.are.same({ changes = 1, last_id = 2 },
                    q(srv, "INSERT INTO items (name, qty) VALUES (?, ?)", { "pear", t.null }, { exec = true }).res)
    assert.are.same({
      { id = 1, name = "apple", qty = 3, price = 1.5, ok = 1 },
      { id = 2, name = "pear", qty = t.null, price = t.null, ok = t.null },
    }, q(srv, "SELECT id, name, qty, price, ok FROM items ORDER BY id").res)
    assert.are.same({ changes = 2 },
                    q(srv, "UPDATE items SET qty = qty WHERE id > ?", { 0 }, { exec = true }).res)
    local res = assert(t.request(srv.port, "POST", "/q",
                                 { body = '{"sql":"SELECT * FROM items WHERE id < 0"}' }))
    assert.are.same('{"res":[]}', res.body)
  end)

  it("binds parameters, never interpolates them", function()
    local evil = "x'); DROP TABLE items; -- ? \"?\""
    assert.are.same(1,
                    q(srv, "INSERT INTO items (name) VALUES (?)", { evil }, { exec = true }).res.changes)
    assert.are.same({ { name = evil, lit = "a?b" } },
                    q(srv, "SELECT name, ? AS lit FROM items WHERE name = ?", { "a?b", evil }).res)
    assert.are.same({ { f = 1.25, big = 9007199254740991, s = "x7" } },
                    q(srv, "SELECT 1.25 AS f, 9007199254740991 AS big, 'x' || ? AS s", { 7 }).res)
  end)

  it("returns nil, err on SQL errors and parameter mismatches", function()
    assert.matches("no such table: missing_table", q(srv, "SELECT * FROM missing_table").err)
    assert.matches("syntax error", q(srv, "SELEC 1").err)
    assert.matches("expected 1 parameter", q(srv, "SELECT ? AS a", {}).err)
  end)

  it("raises on wrong argument types", function()
    local r = assert(t.request(srv.port, "GET", "/misuse")):json()
    assert.are.same(false, r.ok)
    assert.matches("bad argument #1 to 'query'", r.errs[1])
    assert.matches("bad parameter #1", r.errs[2])
    assert.matches("bad argument #1 to 'open'", r.errs[3])
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
                    q(srv, "SELECT ? AS v", { "pooled" }, { path = "/pool/q" }).res)
    assert.are.same({ ok = true, a = 1, b = "second", after = 1 },
                    assert(t.request(srv.port, "GET", "/pool/tx?name=p1")):json())
    -- a row written by a pool thread's connection is seen by the loop's
    assert.are.same({ { n = 1 } }, q(srv, "SELECT count(*) AS n FROM items WHERE name = 'p1'").res)
  end)

  it("queues concurrent transactions on a small pool and all succeed", function()
    local r = t.concurrent(srv.port, 20, "GET /tx?name=conc&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(20, r.ok)
    assert.are.same({ { n = 20 } },
                    q(srv, "SELECT count(*) AS n FROM items WHERE name = 'conc'").res)
  end)

  it("never blocks the loop with a slow statement", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?n=3000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    local t0 = t.now()
    local worst = 0
    for _ = 1, 10 do
      local s = t.now()
      assert.are.same(200, assert(t.request(srv.port, "GET", "/hello")).status)
      worst = math.max(worst, t.now() - s)
    end
    assert.is_truthy(worst < 0.05, "a /hello took " .. worst .. " s while the statement ran")
    local res = assert(c:read_response(30))
    assert.are.same({ { n = 3000000 } }, res:json().res)
    assert.is_truthy(t.now() - t0 > 0.1, "the slow statement was not slow enough to prove anything")
    c:close()
  end)
end)

describe("sqlite :memory:", function()
  local srv
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/db", env = { DB_URL = "sqlite::memory:" } }
  end)
  lazy_teardown(function() srv:stop() end)

  it("keeps one database on one connection", function()
    assert.are.same({ changes = 1, last_id = 1 },
                    q(srv, "INSERT INTO items (name) VALUES (?)", { "m" }, { exec = true }).res)
    local r = t.concurrent(srv.port, 20, "GET /tx?name=mem&mode=sleep HTTP/1.1\r\nHost: x\r\n\r\n", 20)
    assert.are.same(20, r.ok)
    assert.are.same({ { n = 21 } }, q(srv, "SELECT count(*) AS n FROM items").res)
  end)

  it("interrupts a statement whose client went away", function()
    local c = t.connect(srv.port)
    c:send("GET /slow?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    c:reset()
    t.sleep(0.2)
    -- the only connection is free again at once (the statement alone would take ~30 s)
    local t0 = t.now()
    assert.are.same({ { one = 1 } }, q(srv, "SELECT 1 AS one").res)
    assert.is_truthy(t.now() - t0 < 1, "the cancelled statement still held the connection")
  end)

  it("reports last_id for every insert, also when the id repeats the previous one", function()
    local function exec(sql, ...)
      return q(srv, sql, { ... }, { exec = true }).res
    end
    -- deleting the newest row (no AUTOINCREMENT) hands its id out again
    local id = exec("INSERT INTO items (name) VALUES (?)", "newest").last_id
    assert.are.same({ changes = 1 }, exec("DELETE FROM items WHERE id = ?", id))
    assert.are.same({ changes = 1, last_id = id },
                    exec("INSERT INTO items (name) VALUES (?)", "again"))
    -- so does a rolled-back insert
    assert.are.same(0,
                    assert(t.request(srv.port, "GET", "/tx?name=rolled&mode=raise")):json().after)
    assert.are.same({ changes = 1, last_id = id + 1 },
                    exec("INSERT INTO items (name) VALUES (?)", "after"))
    -- an upsert that updates inserts nothing
    assert.are.same({ changes = 1 }, exec("INSERT INTO items (id, name) VALUES (?, 'u') ON CONFLICT (id) DO UPDATE SET name = 'u'",
            id + 1))
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
    assert.is_truthy(io.open(dir .. "/todo.db"), "todo.db was not created in the working directory")
  end)
end)
