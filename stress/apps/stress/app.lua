-- The app stress/run.sh (make stress) drives: a fast route, routes that wait, hold the
-- event loop or never return, a body sink, and SQLite writes that are acknowledged only
-- once committed. STRESS_DB: the SQLite file of /rows (default: no /rows route).
local moonlet = require "moonlet"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local app = moonlet.app{ title = "stress" }

app:get("/hello", function() return { message = "hello" } end)

-- waits s seconds without holding the loop
app:get("/sleep", function(req)
  local s = tonumber(req.query.s) or 1
  moonlet.sleep(s)
  return { slept = s }
end)

-- holds the whole event loop for s seconds: the blocking mistake
app:get("/block", function(req)
  local s = tonumber(req.query.s) or 1
  ffi.C.poll(nil, 0, math.floor(s * 1000))
  return { blocked = s }
end)

-- never yields, never returns
app:get("/spin", function()
  local n = 0
  while true do n = n + 1 end
end)

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
