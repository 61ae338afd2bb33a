-- The app metrics_spec.lua drives: routes for each status class, a pooled route, a
-- request held by moonlet.sleep, one that blocks the loop (a watchdog stall) and one that
-- holds a SQLite connection while it sleeps.
local moonlet = require "moonlet"
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local app = moonlet.app{ title = "metrics" }
local db = assert(moonlet.db.open("sqlite::memory:", { pool_size = 1 }))

app:get("/items/{id:int}", function(req) return { id = req.params.id } end)
app:post("/items/{id:int}", function(req) return 201, { id = req.params.id } end)
app:get("/missing", function() error(moonlet.http_error(404, "no such thing")) end)
app:get("/boom", function() error("boom") end)
app:get("/pooled/{name}", { pool = true }, function(req) return { name = req.params.name } end)
app:get("/pooled-sleep", { pool = true }, function(req)
  moonlet.sleep(tonumber(req.query.s) or 1)
  return { slept = true }
end)

-- a run_in_pool call holding an executor thread
app:get("/executor-sleep", function(req)
  moonlet.run_in_pool(function(s) require("moonlet").sleep(s) end, tonumber(req.query.s) or 1)
  return { ok = true }
end)
app:get("/sleep", function(req)
  moonlet.sleep(tonumber(req.query.s) or 1)
  return { slept = true }
end)

-- holds the loop (the seeds' /a mistake): the watchdog counts a stall for this route
app:get("/block", function(req)
  ffi.C.poll(nil, 0, math.floor((tonumber(req.query.s) or 0.3) * 1000))
  return { blocked = true }
end)

-- a request of moonlet's HTTP client to ?url=: its connection stays in the client's pool
app:get("/fetch", function(req)
  local res, err = moonlet.http.get(req.query.url, { timeout = 5 })
  return { status = res and res.status, err = err }
end)

-- a connection of the pool leased while the handler sleeps
app:get("/db/hold", function(req)
  return db:transaction(function(tx)
    local rows = assert(tx:query("SELECT 1 AS one"))
    moonlet.sleep(tonumber(req.query.s) or 1)
    return { one = rows[1].one }
  end)
end)

return app
