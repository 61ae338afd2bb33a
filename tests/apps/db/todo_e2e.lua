-- The apps/todo walk-through both db specs run (SQLite and PostgreSQL): create, list,
-- read, update, delete, and the error answers. Returns function(port).
local t = require "moonlet.testing"
local assert = require "luassert"   -- a required module sees _G, not the spec's env

return function(port)
  local function call(method, path, body)
    return assert(t.request(port, method, path, { body = body }))
  end
  local res = call("GET", "/todos")
  assert.are.same(200, res.status)
  assert.are.same("[]", res.body)
  res = call("POST", "/todos", '{"title":"buy milk"}')
  assert.are.same(201, res.status)
  local first = res:json()
  assert.are.same("buy milk", first.title)
  assert.are.same(false, first.done)
  assert.is_truthy(type(first.id) == "number", "id is a number")
  local second = call("POST", "/todos", '{"title":"walk the dog"}'):json()
  -- validated bodies: FastAPI's 422 shapes
  res = call("POST", "/todos", '{}')
  assert.are.same(422, res.status)
  assert.are.same({ detail = { { type = "missing", loc = { "body", "title" },
                                 msg = "Field required", input = {} } } }, res:json())
  res = call("POST", "/todos", '{"title": 5, "done": "maybe"}')
  assert.are.same(422, res.status)
  local types = {}
  for i, e in ipairs(res:json().detail) do types[i] = e.type .. ":" .. e.loc[2] end
  assert.are.same({ "bool_parsing:done", "string_type:title" }, types)
  res = call("POST", "/todos", '{"title":"' .. string.rep("x", 201) .. '"}')
  assert.are.same("string_too_long", res:json().detail[1].type)
  assert.are.same(422, call("POST", "/todos", '{"title":""}').status)
  assert.are.same(422, call("POST", "/todos", 'not json').status)
  assert.are.same(422, call("PATCH", "/todos/" .. first.id, '{"done":"yes please"}').status)
  assert.are.same({ first, second }, call("GET", "/todos"):json())
  assert.are.same(second, call("GET", "/todos/" .. second.id):json())
  res = call("GET", "/todos/999999")
  assert.are.same(404, res.status)
  assert.are.same({ detail = "Todo not found" }, res:json())
  assert.are.same({ id = first.id, title = "buy milk", done = true },
                  call("PATCH", "/todos/" .. first.id, '{"done":true}'):json())
  assert.are.same({ id = first.id, title = "buy oat milk", done = true },
                  call("PATCH", "/todos/" .. first.id, '{"title":"buy oat milk"}'):json())
  assert.are.same(404, call("PATCH", "/todos/999999", '{"done":true}').status)
  res = call("DELETE", "/todos/" .. second.id)
  assert.are.same(204, res.status)
  assert.are.same("", res.body)
  assert.are.same(404, call("DELETE", "/todos/" .. second.id).status)
  assert.are.same({ { id = first.id, title = "buy oat milk", done = true } },
                  call("GET", "/todos"):json())
  -- a done given at creation; CORS for the configured origin
  res = call("POST", "/todos", '{"title":"ship it","done":true}')
  assert.are.same(true, res:json().done)
  res = assert(t.request(port, "OPTIONS", "/todos/1", { headers = {
    origin = "http://localhost:3000", ["access-control-request-method"] = "PATCH" } }))
  assert.are.same(200, res.status)
  assert.are.same("http://localhost:3000", res.headers["access-control-allow-origin"])
  res = assert(t.request(port, "GET", "/todos", { headers = { origin = "http://evil.example" } }))
  assert.are.same(nil, res.headers["access-control-allow-origin"])
end
