-- moonlet.schema and the route options params/query/headers/body (+ form) through the real
-- binary (tests/apps/validation), for coroutine and pooled routes: converted values reach
-- the handler; invalid input answers 422 with every error at once, in FastAPI's shape with
-- pydantic v2's types and messages, compared field by field.
local t = require "moonlet.testing"

local null = t.null

describe("validation", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/validation" } end)
  lazy_teardown(function() srv:stop() end)

  local function req(method, path, opts) return assert(t.request(srv.port, method, path, opts)) end
  local function get(path, headers) return req("GET", path, { headers = headers }) end
  local function post(path, body, ctype)
    return req("POST", path, { body = body,
                               headers = { ["content-type"] = ctype or "application/json" } })
  end
  -- the detail list of a 422
  local function detail(res)
    assert.are.same(422, res.status)
    assert.are.same("application/json", res.headers["content-type"])
    return res:json().detail
  end
  local function err(etype, loc, msg, input, ctx)
    return { type = etype, loc = loc, msg = msg, input = input == nil and null or input,
             ctx = ctx }
  end
  local INT = "Input should be a valid integer, unable to parse string as an integer"

  for _, mode in ipairs{ "co", "pool" } do
    local base = "/" .. mode
    local pooled = mode == "pool"

    describe(mode == "co" and "a coroutine route" or "a pooled route", function()
      it("converts query strings and fills defaults; undeclared keys stay strings", function()
        local res = get(base .. "/items?limit=10&flag=true&ratio=0.5&q=ab&other=5&code=AB1")
        assert.are.same(200, res.status)
        assert.are.same({ query = { limit = 10, page = 1, flag = true, ratio = 0.5, q = "ab",
                                    other = "5", code = "AB1", ids = {} }, pooled = pooled },
                        res:json())
        assert.matches('"ids":[]', res.body, 1, true)   -- an array default stays an array
      end)

      it("reads integers as pydantic does: digits with a sign and spaces, nothing else",
         function()
        for v, want in pairs{ ["10"] = 10, ["010"] = 10, ["%2B5"] = 5, ["%205%20"] = 5,
                              ["100"] = 100 } do
          assert.are.same(want, get(base .. "/items?limit=" .. v):json().query.limit)
        end
        for _, v in ipairs{ "1e1", "0x10", "1.0", "inf", "nan", "5x" } do
          local d = detail(get(base .. "/items?limit=" .. v))
          assert.are.same("int_parsing", d[1].type)
        end
      end)

      it("reads booleans as pydantic does", function()
        for v, want in pairs{ ["1"] = true, ["0"] = false, yes = true, off = false,
                              True = true, FALSE = false, on = true, n = false } do
          assert.are.same(want, get(base .. "/items?limit=1&flag=" .. v):json().query.flag)
        end
      end)

      it("takes a repeated key as a list for an array, and refuses it for a scalar", function()
        assert.are.same({ "a", "b" }, get(base .. "/items?limit=1&tags=a&tags=b"):json().query.tags)
        assert.are.same({ "a" }, get(base .. "/items?limit=1&tags=a"):json().query.tags)
        assert.are.same({ 1, 2 }, get(base .. "/items?limit=1&ids=1&ids=2"):json().query.ids)
        assert.are.same({
          err("int_type", { "query", "limit" }, "Input should be a valid integer", { "1", "2" }),
        }, detail(get(base .. "/items?limit=1&limit=2")))
      end)

      it("answers a missing query parameter as FastAPI does (input null)", function()
        -- FastAPI's docs (query params, "needy"): {"type":"missing","loc":["query","needy"],
        -- "msg":"Field required","input":null}
        assert.are.same({ err("missing", { "query", "limit" }, "Field required", null) },
                        detail(get(base .. "/items")))
      end)

      it("reports every query error at once, in field order", function()
        local d = detail(get(base .. "/items?limit=ten&page=x&q=a&flag=maybe&ratio=2&kind=d"
                             .. "&code=ab1&tags=a&tags=b&tags=c&tags=d&ids=1&ids=x"))
        assert.are.same({
          err("string_pattern_mismatch", { "query", "code" },
              "String should match pattern '^%u%u%d$'",
              "ab1", { pattern = "^%u%u%d$" }),
          err("bool_parsing", { "query", "flag" },
              "Input should be a valid boolean, unable to interpret input", "maybe"),
          err("int_parsing", { "query", "ids", 1 }, INT, "x"),
          err("literal_error", { "query", "kind" }, "Input should be 'a', 'b' or 'c'", "d",
              { expected = "'a', 'b' or 'c'" }),
          err("int_parsing", { "query", "limit" }, INT, "ten"),
          err("int_parsing", { "query", "page" }, INT, "x"),
          err("string_too_short", { "query", "q" }, "String should have at least 2 characters",
              "a", { min_length = 2 }),
          err("less_than_equal", { "query", "ratio" }, "Input should be less than or equal to 1",
              "2", { le = 1 }),
          err("too_long", { "query", "tags" },
              "List should have at most 3 items after validation, not 4",
              { "a", "b", "c", "d" }, { field_type = "List", max_length = 3, actual_length = 4 }),
        }, d)
      end)

      it("checks bounds, lengths in characters, and numbers", function()
        assert.are.same({
          err("greater_than_equal", { "query", "limit" },
              "Input should be greater than or equal to 1",
              "0", { ge = 1 }),
          err("string_too_long", { "query", "q" }, "String should have at most 5 characters",
              "abcdef", { max_length = 5 }),
          err("float_parsing", { "query", "ratio" },
              "Input should be a valid number, unable to parse string as a number", "0x1"),
        }, detail(get(base .. "/items?limit=0&q=abcdef&ratio=0x1")))
        -- five characters in ten bytes are not too long
        local q = get(base .. "/items?limit=1&q=%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9"):json().query.q
        assert.are.same("ééééé", q)
        assert.are.same({ err("greater_than_equal", { "query", "ratio" },
                              "Input should be greater than or equal to 0", "-0.25", { ge = 0 }) },
                        detail(get(base .. "/items?limit=1&ratio=-0.25")))
      end)

      it("converts and checks path parameters", function()
        assert.are.same({ id = 12, pooled = pooled }, get(base .. "/users/12"):json())
        -- FastAPI's docs (path params, /items/foo): int_parsing at ["path","item_id"]
        assert.are.same({ err("int_parsing", { "path", "id" }, INT, "foo") },
                        detail(get(base .. "/users/foo")))
        assert.are.same({ err("greater_than_equal", { "path", "id" },
                              "Input should be greater than or equal to 1", "0", { ge = 1 }) },
                        detail(get(base .. "/users/0")))
      end)

      it("validates headers by their dashed names and converts them", function()
        local res = get(base .. "/headers", { ["X-Token"] = "abcd", ["x-count"] = "7",
                                              ["x-ids"] = "1, 2", ["user-agent"] = "spec" })
        assert.are.same(200, res.status)
        assert.are.same({ token = "abcd", count = 7, ids = { 1, 2 }, agent = "spec" }, res:json())
        assert.are.same({
          err("int_parsing", { "header", "x-count" }, INT, "q"),
          err("missing", { "header", "x-token" }, "Field required", null),
        }, detail(get(base .. "/headers", { ["x-count"] = "q" })))
        assert.are.same({
          err("string_too_short", { "header", "x-token" },
              "String should have at least 3 characters",
              "ab", { min_length = 3 }),
        }, detail(get(base .. "/headers", { ["x-token"] = "ab" })))
      end)

      it("gives req:json() the validated body, nested, converted, with defaults filled", function()
        local res = post(base .. "/things", '{"title":"towel","price":"3.5","owner":{"name":"ann"},'
                         .. '"items":[{"name":"a","n":"2"}],"unknown":1}')
        assert.are.same(200, res.status)
        assert.are.same({ body = { title = "towel", price = 3.5, qty = 1, paid = false, tags = {},
                                   owner = { name = "ann" }, items = { { name = "a", n = 2 } } },
                          pooled = pooled }, res:json())
        assert.matches('"tags":[]', res.body, 1, true)
        assert.is_nil(res.body:find("unknown", 1, true))   -- ignored, not passed on
      end)

      it("reports every body error at once with 0-based list indices", function()
        local body = '{"title":"","price":-1,"qty":1.5,"tags":"x","owner":{"email":5},'
                     .. '"items":[{"name":"a","n":0},{"n":"one"}],"paid":"maybe"}'
        assert.are.same({
          err("greater_than_equal", { "body", "items", 0, "n" },
              "Input should be greater than or equal to 1", 0, { ge = 1 }),
          err("int_parsing", { "body", "items", 1, "n" }, INT, "one"),
          err("missing", { "body", "items", 1, "name" }, "Field required", { n = "one" }),
          err("string_type", { "body", "owner", "email" }, "Input should be a valid string", 5),
          err("missing", { "body", "owner", "name" }, "Field required", { email = 5 }),
          err("bool_parsing", { "body", "paid" },
              "Input should be a valid boolean, unable to interpret input", "maybe"),
          err("greater_than_equal", { "body", "price" },
              "Input should be greater than or equal to 0",
              -1, { ge = 0 }),
          err("int_from_float", { "body", "qty" },
              "Input should be a valid integer, got a number with a fractional part", 1.5),
          err("list_type", { "body", "tags" }, "Input should be a valid list", "x"),
          err("string_too_short", { "body", "title" }, "String should have at least 1 character",
              "", { min_length = 1 }),
        }, detail(post(base .. "/things", body)))
      end)

      it("matches FastAPI's answer for a string that is not an integer in a body", function()
        -- FastAPI's docs (handling errors, {"title":"towel","size":"XL"}): int_parsing at
        -- ["body","size"] with input "XL"; here price is a number and qty an integer
        assert.are.same({ err("int_parsing", { "body", "qty" }, INT, "XL") },
                        detail(post(base .. "/things", '{"title":"towel","price":1,"qty":"XL"}')))
      end)

      it("answers a missing body, a body that is not JSON and one that is not an object", function()
        assert.are.same({ err("missing", { "body" }, "Field required", null) },
                        detail(post(base .. "/things", "")))
        local d = detail(post(base .. "/things", '{"title":1, }'))
        assert.are.same(1, #d)
        assert.are.same("json_invalid", d[1].type)
        assert.are.same({ "body", 12 }, d[1].loc)   -- the 0-based position, as FastAPI's
        assert.are.same("JSON decode error", d[1].msg)
        assert.are.same({}, d[1].input)
        assert.are.same("string", type(d[1].ctx.error))
        assert.are.same({ err("model_attributes_type", { "body" },
                              "Input should be a valid dictionary or object to extract fields from",
                              { 1, 2 }) }, detail(post(base .. "/things", "[1,2]")))
      end)

      it("refuses unknown fields with additional = false", function()
        assert.are.same({ body = { title = "a" } }, post(base .. "/strict", '{"title":"a"}'):json())
        assert.are.same({
          err("extra_forbidden", { "body", "more" }, "Extra inputs are not permitted", 1),
          err("extra_forbidden", { "body", "x" }, "Extra inputs are not permitted", { 2 }),
        }, detail(post(base .. "/strict", '{"title":"a","x":[2],"more":1}')))
      end)

      it("validates a form body like query strings (form = true)", function()
        local form = "application/x-www-form-urlencoded"
        local res = post(base .. "/form", "user=ann&age=42&roles=a&roles=b", form)
        assert.are.same({ form = { user = "ann", age = 42, remember = false, roles = { "a", "b" } },
                          pooled = pooled }, res:json())
        assert.are.same(true, post(base .. "/form", "user=a&age=1&remember=on", form):json()
                                .form.remember)
        -- an empty value is missing (FastAPI's forms), so a default fills it
        assert.are.same({
          err("int_parsing", { "body", "age" }, INT, "x"),
          err("missing", { "body", "user" }, "Field required", null),
        }, detail(post(base .. "/form", "user=&age=x&remember=", form)))
        assert.are.same(415, post(base .. "/form", "{}").status)
      end)

      it("reports path, query, header and body errors together, in that order", function()
        local d = detail(req("POST", base .. "/all/x?limit=y", { body = '{"n":"z"}' }))
        assert.are.same({
          err("int_parsing", { "path", "id" }, INT, "x"),
          err("int_parsing", { "query", "limit" }, INT, "y"),
          err("missing", { "header", "x-token" }, "Field required", null),
          err("int_parsing", { "body", "n" }, INT, "z"),
          err("missing", { "body", "title" }, "Field required", { n = "z" }),
        }, d)
        local ok = req("POST", base .. "/all/3?limit=4", { body = '{"n":5,"title":"t"}',
                                                          headers = { ["x-token"] = "k" } })
        assert.are.same({ id = 3, limit = 4, token = "k", body = { n = 5, title = "t" } },
                        ok:json())
      end)

      it("lets an optional body be absent", function()
        assert.are.same({ body = "none" }, post(base .. "/maybe", ""):json())
        assert.are.same({ body = { a = 2 } }, post(base .. "/maybe", '{"a":"2"}'):json())
      end)

      it("leaves a route without schemas as it was", function()
        assert.are.same({ q = "5" }, get(base .. "/plain?q=5"):json())
      end)
    end)
  end

  it("gives curl the 422 as JSON", function()
    local r = t.run({ "-s", "-w", "\n%{http_code}", "http://127.0.0.1:" .. srv.port
                      .. "/co/items?limit=ten" }, { bin = "curl" })
    local body, code = r.stdout:match("^(.*)\n(%d+)$")
    assert.are.same("422", code)
    assert.are.same({ detail = { err("int_parsing", { "query", "limit" }, INT, "ten") } },
                    t.json_decode(body))
  end)

  it("checks valid scalar input without allocating", function()
    assert.are.same({ bytes = 0, errors = false, n = 42, b = true }, get("/alloc"):json())
  end)

  it("describes a schema as JSON Schema", function()
    assert.are.same({
      type = "object", description = "A thing", additionalProperties = false,
      required = { "price", "title" },
      properties = {
        title = { type = "string", minLength = 1, maxLength = 50, description = "The title",
                  example = "towel" },
        size = { type = "integer", minimum = 1, maximum = 10, default = 5 },
        tags = { type = "array", minItems = 1, maxItems = 2,
                 items = { type = "string", enum = { "a", "b" } } },
        price = { type = "number", minimum = 0 },
      },
    }, get("/json_schema"):json())
  end)

  for _, case in ipairs{
    { "unknown_option", "bad argument #1 to 'integer' (unknown option 'minimum'" },
    { "bad_pattern", "pattern must be a valid Lua pattern" },
    { "bad_enum", "enum values must be strings" },
    { "bad_default", "default does not validate: Input should be greater than or equal to 1" },
    { "array_item", "bad argument #1 to 'array' (expected the items' schema" },
    { "object_field", "field 'title' is not a schema" },
    { "object_option", "bad argument #2 to 'object' (unknown option 'extra'" },
    { "query_table", "query must be a table of schemas" },
    { "query_field", "query: field 'q' is not a schema" },
    { "body_schema", "body must be a schema" },
    { "form_bool", "form must be a boolean" },
    { "form_body", "form = true needs body = moonlet.schema.object" },
    { "params_path", "params: 'idd' is not a parameter of the path /x/{id}" },
    { "query_object", "query: field 'o' cannot be an object" },
  } do
    it("refuses to load with a clear error: " .. case[1], function()
      local r = t.run({ "serve", "tests/apps/validation", "--port", "0" },
                      { env = { VALIDATION_BAD = case[1] }, timeout = 10 })
      assert.are.same(2, r.status)
      assert.matches(case[2], r.stderr, 1, true)
      assert.matches("tests/apps/validation/app.lua:%d+:", r.stderr)
    end)
  end
end)
