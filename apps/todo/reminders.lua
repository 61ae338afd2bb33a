-- Reminders: a todo given a due date (Unix seconds) gets a job that runs then and logs a
-- line, through moonlet.jobs on the Redis of REDIS_URL (README "Background jobs"). Without
-- REDIS_URL, due dates are accepted and no reminder is scheduled. The tasks run in
--   REDIS_URL=redis://127.0.0.1:6379/0 build/moonlet worker apps/todo --queue todo
-- (or `serve apps/todo --worker todo`); the due date itself is not stored.
local moonlet = require "moonlet"
local store = require "store"

local _M = {}

local url = os.getenv("REDIS_URL")
local jobs = url and moonlet.jobs.queue("todo", { redis = url })

if jobs then
  -- the todo is read when the reminder runs: it may have been renamed, done or deleted
  jobs:task("remind", function(_, id)
    local rows = assert(store.open():query("SELECT title, done FROM todos WHERE id = ?", id))
    local row = rows[1]
    if not row then
      moonlet.log.info(("reminder: todo %d is gone"):format(id))
      return "gone"
    end
    if row.done == true or row.done == 1 then
      moonlet.log.info(("reminder: todo %d %q is done already"):format(id, row.title))
      return "done"
    end
    moonlet.log.info(("reminder: todo %d %q is due"):format(id, row.title))
    return "reminded"
  end, { retries = 5, backoff = 2 })
end

-- Schedules todo id's reminder at due (Unix seconds): the job's id, or nil when reminders
-- are off. The job id holds the due date, so saving the same date twice schedules once.
function _M.schedule(id, due)
  if not jobs then return nil end
  local job = assert(jobs:enqueue("remind", id, { at = due, id = ("todo-%d-%d"):format(id, due) }))
  return job
end

return _M
