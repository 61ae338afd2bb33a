-- The app stress/run.sh (make stress) drives: a fast route, a route that waits (and counts
-- the requests waiting in it), a body sink, and SQLite writes acknowledged only once
-- committed. STRESS_DB: the SQLite file of /rows (without it, no /rows route). The routes
-- that hold the event loop are tests/apps/stall's.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "stress" }

app:get("/hello", function() return { message = "hello" } end)

-- waits s seconds without holding the loop; /inflight: how many wait now
local waiting = 0
app:get("/sleep", function(req)
  local s = tonumber(req.query.s) or 1
  waiting = waiting + 1
  moonlet.sleep(s)
  waiting = waiting - 1
  return { slept = s }
end)
app:get("/inflight", function() return { waiting = waiting } end)

-- a body sink: the size of what arrived
app:post("/echo", function(req) return { bytes = #req.body } end)

local path = os.getenv("STRESS_DB")
if path then
  local db = assert(moonlet.db.open("sqlite:" .. path))
  assert(db:exec("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT)"))
  -- 201 once the row is committed: an acknowledged row must survive a kill -9
  app:post("/rows/{id:int}", function(req)
    assert(db:exec("INSERT INTO rows (id, body) VALUES (?, ?)", req.params.id, req.body))
    return 201, { id = req.params.id }
  end)
end

return app
