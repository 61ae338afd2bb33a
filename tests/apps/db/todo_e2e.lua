-- The apps/todo walk-through both db specs run (SQLite and PostgreSQL): create, list,
-- read, update, delete, and the error answers. Returns function(port).
local t = require "moonlet.testing"
local eq = t.eq

return function(port)
  local function call(method, path, body)
    return assert(t.request(port, method, path, { body = body }))
  end
  local res = call("GET", "/todos")
  eq(res.status, 200)
  eq(res.body, "[]")
  res = call("POST", "/todos", '{"title":"buy milk"}')
  eq(res.status, 201)
  local first = res:json()
  eq(first.title, "buy milk")
  eq(first.done, false)
  t.ok(type(first.id) == "number", "id is a number")
  local second = call("POST", "/todos", '{"title":"walk the dog"}'):json()
  eq(call("POST", "/todos", '{}').status, 422)
  eq(call("POST", "/todos", '{"title": 5}').status, 422)
  eq(call("POST", "/todos", 'not json').status, 400)
  eq(call("GET", "/todos"):json(), { first, second })
  eq(call("GET", "/todos/" .. second.id):json(), second)
  res = call("GET", "/todos/999999")
  eq(res.status, 404)
  eq(res:json(), { detail = "Todo not found" })
  eq(call("PATCH", "/todos/" .. first.id, '{"done":true}'):json(),
     { id = first.id, title = "buy milk", done = true })
  eq(call("PATCH", "/todos/" .. first.id, '{"title":"buy oat milk"}'):json(),
     { id = first.id, title = "buy oat milk", done = true })
  eq(call("PATCH", "/todos/999999", '{"done":true}').status, 404)
  res = call("DELETE", "/todos/" .. second.id)
  eq(res.status, 204)
  eq(res.body, "")
  eq(call("DELETE", "/todos/" .. second.id).status, 404)
  eq(call("GET", "/todos"):json(), { { id = first.id, title = "buy oat milk", done = true } })
end
