-- The todo store: the database handle of this Lua state (the loop's and each pool
-- thread's open their own) and the transaction dependency the routes use.
local moonlet = require "moonlet"

local _M = {}

local url = os.getenv("DATABASE_URL") or "sqlite:todo.db"
_M.pg = url:match("^postgres") ~= nil

-- Opens the database once per state and, on the loop's state, makes the table: app.lua
-- runs it at startup (before the server listens); a pool thread's state, which runs no
-- hooks, on its first transaction. A spec that overrides transaction never opens it.
function _M.open()
  if _M.db then return _M.db end
  local db = assert(moonlet.db.open(url))
  if not moonlet.in_pool() then _M.create(db) end
  _M.db = db
  return db
end

function _M.create(db)
  assert(db:exec(_M.pg and [[
    CREATE TABLE IF NOT EXISTS todos (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL,
                                      done BOOLEAN NOT NULL DEFAULT false)
  ]] or [[
    CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
                                      done INTEGER NOT NULL DEFAULT 0)
  ]]))
end

-- A transaction dependency on db: a transaction per request, committed when the handler
-- succeeds and rolled back when it fails. It ends before the response is made
-- ("handler"), so a client reads back what its 201 said was written; a failed COMMIT
-- answers 500 instead.
function _M.transaction_on(db)
  return function(req)
    local tx = assert(db:begin())
    req:defer(function(err)
      if err == nil then
        assert(tx:commit())
      else
        tx:rollback()
      end
    end, "handler")
    return tx
  end
end

-- deps = { tx = store.transaction }: the app's database's (apps/todo/todo_spec.lua
-- overrides it with one on an in-memory database).
function _M.transaction(req)
  return _M.transaction_on(_M.open())(req)
end

return _M
