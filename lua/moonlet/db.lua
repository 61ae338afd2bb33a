-- moonlet.db: one API over SQLite and PostgreSQL.
--   local db = assert(moonlet.db.open("sqlite:app.db"))        -- or "postgres://u:p@h/db"
--   db:exec("INSERT INTO todos(title) VALUES (?)", "milk")     --> { changes = 1, last_id = 1 }
--   db:query("SELECT * FROM todos WHERE id = ?", 1)            --> { { id = 1, title = "milk" } }
--   db:transaction(function(tx) tx:exec(...); return tx:query(...) end)
-- Calls wait through moonlet's tasks: a coroutine route yields, a pooled route (and app
-- loading) blocks its own thread. Placeholders are `?` for both drivers (`??` is a
-- literal `?` for PostgreSQL). SQL errors return nil, err; misuse raises.
local core = require "moonlet.core"

local setmetatable, type, error, pcall = setmetatable, type, error, pcall
local sub, find = string.sub, string.find

---moonlet.db: SQLite and PostgreSQL behind one API.
---@class moonlet.db
local _M = { _VERSION = "0.1.0" }

local QUERY, EXEC = 0, 1

---A database handle (moonlet.db.open): a pool of connections.
---@class moonlet.DB
---@field driver "sqlite"|"postgres"
local DB = {}
local db_mt = { __index = DB }
---A transaction on a connection of its own (db:begin, db:transaction).
---@class moonlet.Tx
local Tx = {}
local tx_mt = { __index = Tx }

local function check_sql(sql, fname)
  if type(sql) ~= "string" then
    error("bad argument #1 to '" .. fname .. "' (expected the SQL text, got " .. type(sql) .. ")", 3)
  end
end

---db:query(sql, ...) -> array of rows ({ column = value }), or nil, err
---@param sql string `?` placeholders
---@param ... any the values
---@return table[]|nil rows
---@return string? err
function DB:query(sql, ...)
  check_sql(sql, "query")
  return self._h:run(nil, QUERY, sql, ...)
end

---db:exec(sql, ...) -> { changes = n, last_id = id|nil }, or nil, err
---@param sql string `?` placeholders
---@param ... any the values
---@return {changes: integer, last_id: integer?}|nil result
---@return string? err
function DB:exec(sql, ...)
  check_sql(sql, "exec")
  return self._h:run(nil, EXEC, sql, ...)
end

local function lease_of(tx)
  local lease = tx._lease
  if not lease then error("this transaction is finished (committed or rolled back)", 3) end
  return lease
end

---tx:query(sql, ...): db:query in the transaction.
---@param sql string
---@param ... any
---@return table[]|nil rows
---@return string? err
function Tx:query(sql, ...)
  check_sql(sql, "query")
  return self._h:run(lease_of(self), QUERY, sql, ...)
end

---tx:exec(sql, ...): db:exec in the transaction.
---@param sql string
---@param ... any
---@return {changes: integer, last_id: integer?}|nil result
---@return string? err
function Tx:exec(sql, ...)
  check_sql(sql, "exec")
  return self._h:run(lease_of(self), EXEC, sql, ...)
end

-- COMMIT on lease, which goes back to the pool: true, or nil, err after a ROLLBACK.
local function commit(h, lease)
  local done, err = h:run(lease, EXEC, "COMMIT")
  if not done then
    h:run(lease, EXEC, "ROLLBACK")
    lease:release(false)
    return nil, err
  end
  lease:release(true)
  return true
end

---tx:commit() -> true, or nil, err (then it was rolled back): ends a db:begin() transaction.
---@return true|nil ok
---@return string? err
function Tx:commit()
  if self._managed then error("inside db:transaction: return to commit, raise to roll back", 2) end
  local lease = lease_of(self)
  self._lease = nil
  return commit(self._h, lease)
end

---tx:rollback() -> true, or nil, err: ends a db:begin() transaction, undoing it.
---@return true|nil ok
---@return string? err
function Tx:rollback()
  if self._managed then error("inside db:transaction: raise to roll back", 2) end
  local lease = lease_of(self)
  self._lease = nil
  local done, err = self._h:run(lease, EXEC, "ROLLBACK")
  lease:release(done ~= nil)
  if not done then return nil, err end
  return true
end

local function finish(h, lease, ok, ...)
  if ok then
    local done, err = commit(h, lease)
    if not done then return nil, err end
    return ...
  end
  local err = ...
  local rolled = h:run(lease, EXEC, "ROLLBACK")
  lease:release(rolled ~= nil)
  error(err, 0)
end

---db:transaction(function(tx) ... end) -> fn's results after COMMIT. If fn raises, the
---transaction is rolled back and the error raised again. tx:query / tx:exec run on the
---transaction's own connection. nil, err when BEGIN or COMMIT fails.
---@param fn fun(tx: moonlet.Tx): ...
---@return any ...
function DB:transaction(fn)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'transaction' (expected a function)", 2)
  end
  local tx, err = self:begin()
  if not tx then return nil, err end
  tx._managed = true
  return finish(self._h, tx._lease, pcall(fn, tx))
end

---db:begin() -> tx, or nil, err: a transaction on a connection of its own, until
---tx:commit() or tx:rollback(); tx:query / tx:exec run in it. One left unfinished is
---rolled back when tx is garbage collected. Suits a dependency whose req:defer commits
---or rolls back.
---@return moonlet.Tx|nil tx
---@return string? err
function DB:begin()
  local h = self._h
  local lease, err = h:acquire()
  if not lease then return nil, err end
  local ok
  ok, err = h:run(lease, EXEC, self._begin)
  if not ok then
    lease:release(false)
    return nil, err
  end
  return setmetatable({ _h = h, _lease = lease }, tx_mt)
end

---db:close(): closes idle connections now and busy ones when their statement ends;
---waiting calls get nil, "closed". The handle cannot be used afterwards.
function DB:close()
  self._h:close()
end

local function opt_size(opts, name)
  local n = opts[name]
  if n == nil then return nil end
  if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
    error("bad argument #2 to 'open' (" .. name .. " must be a positive integer)", 3)
  end
  return n
end

---moonlet.db.open(url[, opts]) -> db, or nil, err
---  "sqlite:PATH", "sqlite::memory:"        opts.pool_size: connections (files, default 4)
---  "postgres://user:pass@host:port/db?..." (also postgresql://) opts.pool_size (default 10),
---  opts.pipeline: when every connection is busy, up to this many statements share one
---  connection's round trips (default 1: none; PostgreSQL only, at most 64)
---@param url string
---@param opts? {pool_size?: integer, pipeline?: integer}
---@return moonlet.DB|nil db
---@return string? err
function _M.open(url, opts)
  if type(url) ~= "string" then
    error("bad argument #1 to 'open' (expected a database URL)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'open' (expected a table of options)", 2)
  end
  opts = opts or {}
  local size = opt_size(opts, "pool_size")
  local pipeline = opt_size(opts, "pipeline")
  local h, err, begin
  if sub(url, 1, 7) == "sqlite:" then
    local path = sub(url, 8)
    if sub(path, 1, 2) == "//" then path = sub(path, 3) end   -- sqlite://PATH
    if path == "" then error("bad argument #1 to 'open' (sqlite: needs a path or :memory:)", 2) end
    if pipeline then error("bad argument #2 to 'open' (pipeline is for PostgreSQL)", 2) end
    h, err = core.db_sqlite_open(path, size)
    begin = "BEGIN IMMEDIATE"   -- take the write lock now: no upgrade deadlock later
  elseif find(url, "^postgres://") or find(url, "^postgresql://") then
    if pipeline and pipeline > 64 then
      error("bad argument #2 to 'open' (pipeline must be at most 64)", 2)
    end
    h, err = core.db_pg_open(url, size, pipeline)
    begin = "BEGIN"
  else
    error("bad argument #1 to 'open' (expected sqlite:PATH or postgres://...)", 2)
  end
  if not h then return nil, err end
  return setmetatable({ _h = h, _begin = begin, driver = begin == "BEGIN" and "postgres" or "sqlite" },
                      db_mt)
end

return _M
