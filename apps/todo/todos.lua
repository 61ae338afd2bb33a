-- The /todos router: CRUD on the todos table, every handler in the request's transaction
-- (req.deps.tx), bodies validated by moonlet.schema.
local moonlet = require "moonlet"
local store = require "store"
local reminders = require "reminders"
local s = moonlet.schema

local pg = store.pg
local todos = moonlet.router{ prefix = "/todos", tags = { "todos" },
                              deps = { tx = store.transaction } }

-- SQLite has no boolean type: done comes back as 0/1.
local function todo(row)
  return { id = row.id, title = row.title, done = row.done == true or row.done == 1 }
end

local function must(res, err)
  if not res then error("database: " .. tostring(err)) end
  return res
end

local function find(tx, id)
  local rows = must(tx:query("SELECT id, title, done FROM todos WHERE id = ?", id))
  if not rows[1] then error(moonlet.http_error(404, "Todo not found")) end
  return todo(rows[1])
end

local due = s.integer{ optional = true, min = 0, example = 1798761600,
                      description = "Unix time: a reminder job logs the todo then (REDIS_URL)" }

local function title(opts)
  return s.string{ min_length = 1, max_length = 200, optional = opts and opts.optional,
                   description = "What to do", example = "buy milk" }
end

todos:post("", { body = s.object{ title = title(), done = s.boolean{ default = false }, due = due } },
           function(req)
  local body, tx = req:json(), req.deps.tx
  local res = must(tx:exec("INSERT INTO todos (title, done) VALUES (?, ?)" ..
                           (pg and " RETURNING id" or ""),
                           body.title, pg and body.done or (body.done and 1 or 0)))
  local reminder = body.due and reminders.schedule(res.last_id, body.due)
  return 201, { id = res.last_id, title = body.title, done = body.done, reminder = reminder }
end)

todos:get("", function(req)
  local out = moonlet.array{}
  local rows = must(req.deps.tx:query("SELECT id, title, done FROM todos ORDER BY id"))
  for i, row in ipairs(rows) do out[i] = todo(row) end
  return out
end)

todos:get("/{id:int}", function(req)
  return find(req.deps.tx, req.params.id)
end)

todos:patch("/{id:int}", {
  body = s.object{ title = title{ optional = true }, done = s.boolean{ optional = true }, due = due },
}, function(req)
  local body, tx = req:json(), req.deps.tx
  local t = find(tx, req.params.id)
  local new_title = body.title or t.title
  local done = body.done
  if done == nil then done = t.done end
  must(tx:exec("UPDATE todos SET title = ?, done = ? WHERE id = ?", new_title,
               pg and done or (done and 1 or 0), t.id))
  local reminder = body.due and reminders.schedule(t.id, body.due)
  return { id = t.id, title = new_title, done = done, reminder = reminder }
end)

todos:delete("/{id:int}", function(req)
  local res = must(req.deps.tx:exec("DELETE FROM todos WHERE id = ?", req.params.id))
  if res.changes == 0 then error(moonlet.http_error(404, "Todo not found")) end
  return 204, nil
end)

return todos
