-- apps/todo: CRUD over a database. SQLite (todo.db in the working directory) by default,
-- PostgreSQL when DATABASE_URL is set:
--   build/moonlet serve apps/todo
--   DATABASE_URL=postgres://user:pass@127.0.0.1:5432/todo build/moonlet serve apps/todo
local moonlet = require "moonlet"

local app = moonlet.app{ title = "todo", version = "1.0.0" }
local db = assert(moonlet.db.open(os.getenv("DATABASE_URL") or "sqlite:todo.db"))
local pg = db.driver == "postgres"

-- Every state (the loop's and each pool thread's) opens its own handle; the schema is
-- made once, by the loop's state, before the server listens.
if not moonlet.in_pool() then
  assert(db:exec(pg and [[
    CREATE TABLE IF NOT EXISTS todos (id BIGSERIAL PRIMARY KEY, title TEXT NOT NULL,
                                      done BOOLEAN NOT NULL DEFAULT false)
  ]] or [[
    CREATE TABLE IF NOT EXISTS todos (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL,
                                      done INTEGER NOT NULL DEFAULT 0)
  ]]))
end

-- SQLite has no boolean type: done comes back as 0/1.
local function todo(row)
  return { id = row.id, title = row.title, done = row.done == true or row.done == 1 }
end

local function must(res, err)
  if not res then error("database: " .. tostring(err)) end
  return res
end

local function find(id)
  local rows = must(db:query("SELECT id, title, done FROM todos WHERE id = ?", id))
  if not rows[1] then error(moonlet.http_error(404, "Todo not found")) end
  return todo(rows[1])
end

local function check_title(title, required)
  if title == nil and not required then return end
  if type(title) ~= "string" or title == "" then
    error(moonlet.http_error(422, "title must be a non-empty string"))
  end
end

app:post("/todos", function(req)
  local body = req:json()
  if type(body) ~= "table" then error(moonlet.http_error(400, "expected a JSON object")) end
  check_title(body.title, true)
  local res = must(db:exec("INSERT INTO todos (title, done) VALUES (?, ?)" ..
                           (pg and " RETURNING id" or ""), body.title, pg and false or 0))
  return 201, { id = res.last_id, title = body.title, done = false }
end)

app:get("/todos", function()
  local out = moonlet.array{}
  for i, row in ipairs(must(db:query("SELECT id, title, done FROM todos ORDER BY id"))) do
    out[i] = todo(row)
  end
  return out
end)

app:get("/todos/{id:int}", function(req)
  return find(req.params.id)
end)

app:patch("/todos/{id:int}", function(req)
  local body = req:json()
  if type(body) ~= "table" then error(moonlet.http_error(400, "expected a JSON object")) end
  check_title(body.title, false)
  if body.done ~= nil and type(body.done) ~= "boolean" then
    error(moonlet.http_error(422, "done must be a boolean"))
  end
  local t = find(req.params.id)
  local title = body.title or t.title
  local done = body.done
  if done == nil then done = t.done end
  must(db:exec("UPDATE todos SET title = ?, done = ? WHERE id = ?", title,
               pg and done or (done and 1 or 0), t.id))
  return { id = t.id, title = title, done = done }
end)

app:delete("/todos/{id:int}", function(req)
  local res = must(db:exec("DELETE FROM todos WHERE id = ?", req.params.id))
  if res.changes == 0 then error(moonlet.http_error(404, "Todo not found")) end
  return 204, nil
end)

return app
