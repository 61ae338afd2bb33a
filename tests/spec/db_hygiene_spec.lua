-- Connection hygiene of moonlet.db, driven from the spec runner itself (its loop makes
-- the calls block): nothing one caller does may leak into the next user of a pooled
-- connection.
local moonlet = require "moonlet"
local t = require "moonlet.testing"
local ffi = require "ffi"

-- One threadpool thread (libuv reads this when the runner first uses its threadpool,
-- which nothing before this file does): a busy threadpool delays PQcancel, the case the
-- late-cancel test needs.
pcall(ffi.cdef, [[
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);
]])
ffi.C.setenv("UV_THREADPOOL_SIZE", "1", 1)

describe("db connection hygiene", function()
  local pg
  lazy_setup(function() pg = require("tests.support.pg").start() end)
  lazy_teardown(function()
    if pg then pg:stop() end
    ffi.C.unsetenv("UV_THREADPOOL_SIZE")   -- servers started by later specs must not inherit it
  end)

  it("checks opts.pipeline: PostgreSQL only, 1 to 64", function()
    local function err_of(url, opts)
      local ok, e = pcall(moonlet.db.open, url, opts)
      assert.is_false(ok)
      return e
    end
    assert.matches("pipeline is for PostgreSQL", err_of("sqlite::memory:", { pipeline = 2 }))
    assert.matches("pipeline must be at most 64", err_of(pg.url, { pipeline = 65 }))
    assert.matches("pipeline must be a positive integer", err_of(pg.url, { pipeline = 0 }))
    local db = assert(moonlet.db.open(pg.url, { pool_size = 1, pipeline = 64 }))
    assert.are.same({ { one = 1 } }, assert(db:query("SELECT 1 AS one")))
    db:close()
  end)

  it("postgres: a script stopped before its COMMIT leaves no open transaction behind", function()
    local db = assert(moonlet.db.open(pg.url, { pool_size = 1 }))
    assert(db:exec("CREATE TABLE hyg1 (x int)"))
    local r, err = db:exec("BEGIN; INSERT INTO hyg1 VALUES (1); SELECT 1/0; COMMIT")
    assert.are.same(nil, r)
    assert.matches("division by zero", err)
    for _ = 1, 3 do assert.are.same({ { one = 1 } }, assert(db:query("SELECT 1 AS one"))) end
    assert.are.same({ { n = 0 } }, assert(db:query("SELECT count(*)::int AS n FROM hyg1")))
    db:close()
  end)

  it("postgres: a transaction whose statement failed reports that nothing was committed", function()
    local db = assert(moonlet.db.open(pg.url, { pool_size = 2 }))
    assert(db:exec("CREATE TABLE hyg2 (x int)"))
    local res, err = db:transaction(function(tx)
      assert(tx:exec("INSERT INTO hyg2 VALUES (2)"))
      local ok2, e = tx:exec("INSERT INTO no_such_table VALUES (1)")   -- nil, err: not raised
      assert.are.same(nil, ok2)
      assert.matches("does not exist", e)
      return "committed?"
    end)
    assert.are.same(nil, res)
    assert.matches("transaction rolled back", err)
    assert.are.same({ { n = 0 } }, assert(db:query("SELECT count(*)::int AS n FROM hyg2")))
    db:close()
  end)

  -- On a pool of one connection, a query is cancelled at 0.1 s (its pg_sleep(0.3) goes on)
  -- while a slow SQLite statement keeps libuv's threadpool, where PQcancel runs, busy from
  -- 0.05 s: the cancel lands after the cancelled query has ended. `sql` starts at `at`
  -- seconds on the same connection. Returns its rows[1].who, err.
  local function beside_a_late_cancel(at, sql)
    local db = assert(moonlet.db.open(pg.url, { pool_size = 1 }))
    assert(db:query("SELECT 1"))
    local sq = assert(moonlet.db.open("sqlite::memory:"))
    local slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c " ..
                 "WHERE x < 1500000) SELECT count(*) AS n FROM c"
    local who, err
    moonlet.gather(
      function()
        assert.are.same("timeout",
                        select(2, moonlet.timeout(0.1, function() return db:query("SELECT pg_sleep(0.3)") end)))
      end,
      function() moonlet.sleep(0.05); sq:query(slow) end,
      function()
        moonlet.sleep(at)
        local rows
        rows, err = db:query(sql)
        who = rows and rows[1].who
      end)
    db:close()
    sq:close()
    return who, err
  end

  it("postgres: a cancel that reaches the server late hits no other query", function()
    -- B waits for the connection while the cancelled query still holds it
    local who, err = beside_a_late_cancel(0.02, "SELECT pg_sleep(2), 'B' AS who")
    assert.are.same(nil, err)
    assert.are.same("B", who)
  end)

  it("postgres: a cancel that reaches the server late hits no query that came after", function()
    -- C comes once the cancelled query has ended (0.3 s) and nobody waits, before the
    -- cancel has landed: the connection must not serve it until then
    local who, err = beside_a_late_cancel(0.4, "SELECT pg_sleep(1), 'C' AS who")
    assert.are.same(nil, err)
    assert.are.same("C", who)
  end)

  it("postgres: the statement right after a script stopped before its COMMIT runs outside it", function()
    -- from a coroutine, which the end of the script resumes at once: the connection is
    -- rolled back before this coroutine (or anyone) may use it again
    local db = assert(moonlet.db.open(pg.url, { pool_size = 1 }))
    assert(db:exec("CREATE TABLE hyg3 (x int)"))
    local rows, err
    moonlet.gather(function()
      assert.are.same(nil, db:exec("BEGIN; INSERT INTO hyg3 VALUES (1); SELECT 1/0; COMMIT"))
      rows, err = db:query("SELECT count(*)::int AS n FROM hyg3")
    end)
    assert.are.same(nil, err)
    assert.are.same({ { n = 0 } }, rows)
    db:close()
  end)

  it("sqlite: a script stopped before its COMMIT leaves no open transaction behind", function()
    local dir = t.tmpdir()
    local db = assert(moonlet.db.open("sqlite:" .. dir .. "/x.db", { pool_size = 2 }))
    assert(db:exec("CREATE TABLE t (x int)"))
    local r = db:exec("BEGIN; INSERT INTO t VALUES (1); INSERT INTO nope VALUES (1); COMMIT")
    assert.are.same(nil, r)
    assert(db:exec("INSERT INTO t VALUES (2)"))
    local other = assert(moonlet.db.open("sqlite:" .. dir .. "/x.db", { pool_size = 1 }))
    assert.are.same({ { n = 1 } }, assert(other:query("SELECT count(*) AS n FROM t")))
    assert(other:exec("INSERT INTO t VALUES (3)"))   -- not locked out
    db:close()
    other:close()
  end)

  it("sqlite: the statement right after a script stopped before its COMMIT runs outside it", function()
    local dir = t.tmpdir()
    local db = assert(moonlet.db.open("sqlite:" .. dir .. "/y.db", { pool_size = 1 }))
    assert(db:exec("CREATE TABLE t (x int)"))
    local rows, err
    moonlet.gather(function()   -- resumed from the end of the script, as a route would be
      assert.are.same(nil,
                      db:exec("BEGIN; INSERT INTO t VALUES (1); INSERT INTO nope VALUES (1); COMMIT"))
      rows, err = db:query("SELECT count(*) AS n FROM t")
    end)
    assert.are.same(nil, err)
    assert.are.same({ { n = 0 } }, rows)
    db:close()
  end)
end)
