-- apps/todo: CRUD over a database. SQLite (todo.db in the working directory) by default,
-- PostgreSQL when DATABASE_URL is set; CORS for the origin in TODO_CORS_ORIGIN (default
-- http://localhost:3000, a front end in development):
--   build/moonlet serve apps/todo
--   DATABASE_URL=postgres://user:pass@127.0.0.1:5432/todo build/moonlet serve apps/todo
-- A todo with a due date gets a reminder job when REDIS_URL is set (reminders.lua), run by
--   REDIS_URL=redis://127.0.0.1:6379/0 build/moonlet worker apps/todo --queue todo
local moonlet = require "moonlet"

local app = moonlet.app{ title = "todo", version = "1.0.0" }

app:use(moonlet.middleware.cors{
  origins = { os.getenv("TODO_CORS_ORIGIN") or "http://localhost:3000" },
  methods = { "GET", "POST", "PATCH", "DELETE" },
  headers = { "Content-Type" },
})

local store = require "store"
app:on_startup(store.open)    -- the database, before the server listens (store.lua)

app:include(require "todos")   -- todos.lua: the /todos router

return app
