-- The todo store: the database handle of this Lua state (the loop's and each pool
-- thread's open their own) and the transaction dependency the routes use.
local moonlet = require "moonlet"

local _M = {}

local db = assert(moonlet.db.open(os.getenv("DATABASE_URL") or "sqlite:todo.db"))
_M.db = db
_M.pg = db.driver == "postgres"

-- The table is made once, by the loop's state, before the server listens.
if not moonlet.in_pool() then
  assert(db:exec(_M.pg and [[
    CREATE TABLE IF NOT EXISTS todos (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL,
                                      done BOOLEAN NOT NULL DEFAULT false)
  ]] or [[
    CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
                                      done INTEGER NOT NULL DEFAULT 0)
  ]]))
end

-- deps = { tx = store.transaction }: a transaction per request, committed when the
-- handler succeeds and rolled back when it fails. It ends before the response is made
-- ("handler"), so a client reads back what its 201 said was written; a failed COMMIT
-- answers 500 instead.
function _M.transaction(req)
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

return _M
