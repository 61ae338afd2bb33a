-- apps/todo's own spec: `moonlet test apps/todo`. The in-process test client runs the app;
-- the database dependency is overridden with an in-memory SQLite database, so nothing is
-- written to todo.db.
local t = require "moonlet.testing"
local moonlet = require "moonlet"

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

describe("apps/todo", function()
  local client, db

  before_each(function()
    client = t.client(here)
    local store = require "store"   -- the module the app loaded
    db = assert(moonlet.db.open("sqlite::memory:"))
    store.create(db)
    client.app:override(store.transaction, store.transaction_on(db))
  end)

  after_each(function()
    client:close()
    db:close()
  end)

  it("creates, lists, reads, updates and deletes todos", function()
    local res = client:post("/todos", { json = { title = "buy milk" } })
    assert.are.same(201, res.status)
    assert.are.same({ id = 1, title = "buy milk", done = false }, res:json())
    client:post("/todos", { json = { title = "walk", done = true } })
    assert.are.same({ { id = 1, title = "buy milk", done = false },
                      { id = 2, title = "walk", done = true } }, client:get("/todos"):json())
    assert.are.same({ id = 1, title = "buy milk", done = true },
                    client:patch("/todos/1", { json = { done = true } }):json())
    assert.are.same({ id = 1, title = "buy milk", done = true }, client:get("/todos/1"):json())
    assert.are.same(204, client:delete("/todos/1").status)
    assert.are.same(404, client:get("/todos/1").status)
    assert.are.same(404, client:delete("/todos/1").status)
    assert.are.same(1, #client:get("/todos"):json())
  end)

  it("starts from an empty list: []", function()
    local res = client:get("/todos")
    assert.are.same(200, res.status)
    assert.are.same("[]", res.body)
  end)

  it("answers 422 to an invalid body, writing nothing", function()
    local res = client:post("/todos", { json = { title = "" } })
    assert.are.same(422, res.status)
    assert.are.same({ "body", "title" }, res:json().detail[1].loc)
    assert.are.same(422, client:post("/todos", { json = { done = "yes" } }).status)
    assert.are.same(422, client:patch("/todos/1", { json = { title = 5 } }).status)
    assert.are.same("[]", client:get("/todos").body)
  end)

  it("answers a CORS preflight from the front end's origin", function()
    local res = client:options("/todos", { headers = {
      Origin = "http://localhost:3000", ["Access-Control-Request-Method"] = "POST",
      ["Access-Control-Request-Headers"] = "Content-Type" } })
    assert.is_true(res.status == 200 or res.status == 204)
    assert.are.same("http://localhost:3000", res.headers["access-control-allow-origin"])
    assert.truthy(res.headers["access-control-allow-methods"]:find("POST", 1, true))
    local other = client:get("/todos", { headers = { Origin = "http://evil.example" } })
    assert.is_nil(other.headers["access-control-allow-origin"])
  end)
end)
