-- /openapi.json (OpenAPI 3.1) and /docs: the document of tests/apps/openapi (every schema
-- feature and route option) and of apps/todo, checked field by field and by validators
-- nobody here wrote (tests/support/openapi_validate.mjs: @seriousme/openapi-schema-validator
-- and ajv's JSON Schema 2020-12 meta-schema); /docs in headless Chromium.
local t = require "moonlet.testing"

local NODE = { bin = "node", timeout = 90, env = { NODE_PATH = "build/node/node_modules" } }

local function validate(port)
  local r = t.run({ "tests/support/openapi_validate.mjs",
                    "http://127.0.0.1:" .. port .. "/openapi.json" }, NODE)
  assert.are.same(0, r.status, r.stdout .. r.stderr)
  local out = t.json_decode(r.stdout)
  assert.are.same({ true, "3.1" }, { out.valid, out.version })
  return out
end

local VALIDATION_ERROR = { ["$ref"] = "#/components/schemas/HTTPValidationError" }

describe("/openapi.json", function()
  local srv, doc
  lazy_setup(function()
    srv = t.server{ app = "tests/apps/openapi" }
    local res = assert(t.request(srv.port, "GET", "/openapi.json"))
    assert.are.same(200, res.status)
    assert.are.same("application/json", res.headers["content-type"])
    doc = res:json()
  end)
  lazy_teardown(function() srv:stop() end)

  it("is a valid OpenAPI 3.1 document, every schema in it valid JSON Schema 2020-12", function()
    local out = validate(srv.port)
    assert.is_true(out.schemas > 20)
  end)

  it("has the app's info and every HTTP route, without the WebSocket and static ones", function()
    assert.are.same("3.1.0", doc.openapi)
    assert.are.same({ title = "Every feature", version = "2.3.4",
                      description = "The OpenAPI test app" }, doc.info)
    local paths = {}
    for p, item in pairs(doc.paths) do
      for m in pairs(item) do paths[#paths + 1] = m .. " " .. p end
    end
    table.sort(paths)
    assert.are.same({ "get /both", "get /files/{rest}", "get /items/{id}", "get /old",
                      "get /users/{name}", "post /both", "post /items", "post /login",
                      "put /items/{id}" }, paths)
  end)

  it("describes path, query and header parameters, summary, description, 200 and 422", function()
    local op = doc.paths["/items/{id}"].get
    assert.are.same("get_items__id_", op.operationId)
    assert.are.same("Read an item", op.summary)
    assert.are.same("One item, by id.", op.description)
    assert.is_nil(op.deprecated)
    assert.is_nil(op.tags)
    assert.are.same({
      { name = "id", ["in"] = "path", required = true, description = "The item's id",
        schema = { type = "integer", minimum = 1, description = "The item's id" } },
      { name = "limit", ["in"] = "query", required = false,
        schema = { type = "integer", minimum = 1, maximum = 100, default = 10 } },
      { name = "q", ["in"] = "query", required = false, schema = { type = "string", maxLength = 10 } },
      { name = "sort", ["in"] = "query", required = false,
        schema = { type = "array", items = { type = "string", enum = { "asc", "desc" } } } },
      { name = "x-token", ["in"] = "header", required = true, description = "A token",
        schema = { type = "string", description = "A token", examples = { "secret" } } },
    }, op.parameters)
    assert.are.same({ type = "object", properties = { id = { type = "integer" },
                                                      q = { type = "string" } },
                      required = { "id" } },
                    op.responses["200"].content["application/json"].schema)
    assert.are.same(VALIDATION_ERROR, op.responses["422"].content["application/json"].schema)
  end)

  it("has FastAPI's 422 error shape in components", function()
    local s = doc.components.schemas
    assert.are.same({ ["$ref"] = "#/components/schemas/ValidationError" },
                    s.HTTPValidationError.properties.detail.items)
    assert.are.same({ "loc", "msg", "type" }, s.ValidationError.required)
    assert.are.same({ { type = "string" }, { type = "integer" } },
                    s.ValidationError.properties.loc.items.anyOf)
  end)

  it("describes a JSON body with every schema feature, tags and the response schema", function()
    local op = doc.paths["/items"].post
    assert.are.same({ "items" }, op.tags)
    local body = op.requestBody
    assert.is_true(body.required)
    local js = body.content["application/json"].schema
    assert.are.same({
      type = "object", additionalProperties = false, required = { "name", "price" },
      properties = {
        name = { type = "string", minLength = 1, maxLength = 40, description = "The item's name",
                 examples = { "lamp" } },
        price = { type = "number", minimum = 0, maximum = 1e6, examples = { 9.5 } },
        count = { type = "integer", minimum = 1, default = 1 },
        color = { type = "string", enum = { "red", "green" } },
        level = { type = "integer", enum = { 1, 2, 3 } },
        sku = { type = "string", pattern = "^[A-Z][A-Z]-[0-9]+$" },
        tags = { type = "array", items = { type = "string" }, minItems = 0, maxItems = 5,
                 default = {} },
        dims = { type = "object", description = "Width and height", required = { "h", "w" },
                 properties = { w = { type = "number" }, h = { type = "number" } } },
        gift = { type = "boolean", default = false },
      },
    }, js)
    assert.are.same(js, op.responses["200"].content["application/json"].schema)
    assert.are.same(VALIDATION_ERROR, op.responses["422"].content["application/json"].schema)
  end)

  it("describes a form body, a pooled route, deprecated, typed and untyped path params", function()
    local login = doc.paths["/login"].post
    assert.are.same({ "application/x-www-form-urlencoded", "multipart/form-data" },
                    (function()
                      local k = {}
                      for ct in pairs(login.requestBody.content) do k[#k + 1] = ct end
                      table.sort(k)
                      return k
                    end)())
    assert.are.same({ "pass", "user" },
      login.requestBody.content["application/x-www-form-urlencoded"].schema.required)
    assert.are.same({ "items" }, doc.paths["/items/{id}"].put.tags)
    assert.are.same({ { name = "id", ["in"] = "path", required = true,
                        schema = { type = "integer" } } },
                    doc.paths["/items/{id}"].put.parameters)
    local old = doc.paths["/old"].get
    assert.are.same({ true, "Old" }, { old.deprecated, old.summary })
    assert.is_nil(old.responses["422"])
    assert.are.same({ { name = "rest", ["in"] = "path", required = true,
                        schema = { type = "string" } } },
                    doc.paths["/files/{rest}"].get.parameters)
    assert.are.same({ "users", "people" }, doc.paths["/users/{name}"].get.tags)
    assert.are.same({ "get_both", "post_both" },
                    { doc.paths["/both"].get.operationId, doc.paths["/both"].post.operationId })
  end)
end)

describe("/openapi.json of apps/todo", function()
  it("is valid and shows the /todos router with its schemas", function()
    local dir = t.tmpdir()
    local here = assert(io.popen("pwd")):read("*l")
    local srv = t.server{ app = here .. "/apps/todo", cwd = dir, env = { DATABASE_URL = false } }
    validate(srv.port)
    local doc = assert(t.request(srv.port, "GET", "/openapi.json")):json()
    srv:stop()
    assert.are.same({ title = "todo", version = "1.0.0" }, doc.info)
    local post = doc.paths["/todos"].post
    assert.are.same({ "todos" }, post.tags)
    assert.are.same({ type = "string", minLength = 1, maxLength = 200,
                      description = "What to do", examples = { "buy milk" } },
                    post.requestBody.content["application/json"].schema.properties.title)
    assert.are.same({ "delete", "get", "patch" }, (function()
      local k = {}
      for m in pairs(doc.paths["/todos/{id}"]) do k[#k + 1] = m end
      table.sort(k)
      return k
    end)())
  end)
end)

describe("moonlet.app's openapi and docs options", function()
  it("move the document and the page, false turns them off", function()
    local srv = t.server{ app = "tests/apps/openapi",
                          env = { OPENAPI = "/api/schema.json", DOCS = "/api/docs" } }
    assert.are.same(404, assert(t.request(srv.port, "GET", "/openapi.json")).status)
    assert.are.same(404, assert(t.request(srv.port, "GET", "/docs")).status)
    assert.are.same(200, assert(t.request(srv.port, "GET", "/api/schema.json")).status)
    assert.are.same(200, assert(t.request(srv.port, "GET", "/api/docs")).status)
    srv:stop()
    srv = t.server{ app = "tests/apps/openapi", env = { DOCS = "false" } }
    assert.are.same(200, assert(t.request(srv.port, "GET", "/openapi.json")).status)
    assert.are.same(404, assert(t.request(srv.port, "GET", "/docs")).status)
    srv:stop()
    -- no document: no page either (it reads the document)
    srv = t.server{ app = "tests/apps/openapi", env = { OPENAPI = "false" } }
    assert.are.same(404, assert(t.request(srv.port, "GET", "/openapi.json")).status)
    assert.are.same(404, assert(t.request(srv.port, "GET", "/docs")).status)
    srv:stop()
  end)

  it("a bad option or route option stops the app with a clear message", function()
    for _, case in ipairs{
      { { OPENAPI = "openapi.json" }, "option openapi must be a path like \"/openapi.json\"" },
      { { DOCS = "/docs/" }, "option docs must be a path like \"/docs\"" },
      { { BAD_ROUTE = "summary" }, "option summary must be a string" },
      { { BAD_ROUTE = "deprecated" }, "option deprecated must be a boolean" },
      { { BAD_ROUTE = "response" }, "option response must be a schema" },
      { { BAD_ROUTE = "tags" }, "option tags must be a list of strings" },
      { { BAD_ROUTE = "taken" }, "GET /openapi.json is where moonlet serves" },
    } do
      local r = t.run({ "serve", "tests/apps/openapi", "--port", "0" },
                      { env = case[1], timeout = 20 })
      assert.are.same(2, r.status, r.stderr)
      assert.matches(case[2], r.stderr, 1, true)
    end
  end)
end)
