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
                      "get /right", "get /users/{name}", "get /wrong", "get /wrong_pooled",
                      "post /both", "post /items", "post /login", "put /items/{id}" }, paths)
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

describe("/docs", function()
  local srv
  lazy_setup(function() srv = t.server{ app = "tests/apps/openapi" } end)
  lazy_teardown(function() srv:stop() end)

  it("is a small page, its script and style from its own origin under a strict CSP", function()
    local res = assert(t.request(srv.port, "GET", "/docs"))
    assert.are.same(200, res.status)
    assert.are.same("text/html; charset=utf-8", res.headers["content-type"])
    local csp = res.headers["content-security-policy"]
    assert.matches("default-src 'none'", csp, 1, true)
    assert.matches("script-src 'self';", csp, 1, true)
    assert.matches('<script src="/docs/app.js" defer></script>', res.body, 1, true)
    local size = #res.body
    for path, ctype in pairs{ ["/docs/app.js"] = "text/javascript; charset=utf-8",
                              ["/docs/app.css"] = "text/css; charset=utf-8" } do
      local r = assert(t.request(srv.port, "GET", path))
      assert.are.same({ 200, ctype }, { r.status, r.headers["content-type"] })
      assert.is_nil(r.body:find("https?://"), path .. " loads nothing from elsewhere")
      size = size + #r.body
    end
    assert.is_true(size < 50 * 1024, "the page is " .. size .. " bytes")
    -- curl, an outside client, sees the same header
    local c = t.run({ "-s", "-D", "-", "-o", "/dev/null",
                      "http://127.0.0.1:" .. srv.port .. "/docs" }, { bin = "curl" })
    assert.matches("content-security-policy: default-src 'none'", c.stdout:lower(), 1, true)
  end)

  it("in Chromium lists the operations by tag and sends requests from its forms", function()
    local requests = require("cjson").encode{
      { op = "get_items__id_", values = { id = "7", ["x-token"] = "abc", q = "hi" } },
      { op = "get_items__id_", values = { id = "0" } },     -- x-token kept: 422 on the id
      { op = "post_items" },                               -- the body the page made up
      { op = "post_login", body = '{"user": "ann", "pass": "x"}' },   -- a form
      { op = "put_items__id_", values = { id = "3" },      -- a pooled route
        body = '{"name": "desk", "price": 120}' },
    }
    local r = t.run({ "tests/support/docs_browser.js", "http://127.0.0.1:" .. srv.port .. "/docs",
                      requests }, NODE)
    assert.are.same(0, r.status, r.stderr)
    local page = t.json_decode(r.stdout)
    assert.are.same("Every feature 2.3.4 - docs", page.title)
    assert.are.same({ "items", "people", "users", "default" }, page.tags)
    table.sort(page.ops)
    assert.are.same({ "get_both", "get_files__rest_", "get_items__id_", "get_old", "get_right",
                      "get_users__name_", "get_users__name_", "get_wrong", "get_wrong_pooled",
                      "post_both", "post_items", "post_login", "put_items__id_" }, page.ops)
    assert.are.same({ "get_old" }, page.deprecated)
    local res = page.results
    assert.are.same(200, res[1].status)
    assert.are.same({ id = 7, q = "hi", limit = 10 }, t.json_decode(res[1].body))
    assert.matches("content-type: application/json", res[1].headers, 1, true)
    assert.are.same(422, res[2].status)
    local detail = t.json_decode(res[2].body).detail
    assert.are.same({ { "path", "id" }, "greater_than_equal" }, { detail[1].loc, detail[1].type })
    assert.are.same(201, res[3].status)
    assert.are.same({ name = "lamp", price = 9.5, count = 1, tags = {}, gift = false },
                    t.json_decode(res[3].body))
    assert.are.same({ 200, { user = "ann" } }, { res[4].status, t.json_decode(res[4].body) })
    assert.are.same({ 200, { id = 3, name = "desk" } }, { res[5].status, t.json_decode(res[5].body) })
    -- no script error, no CSP violation, nothing that failed to load: Chromium's only
    -- console error is its own line about the 422 the form asked for
    assert.are.same({ "console: Failed to load resource: the server responded with a status "
                      .. "of 422 (Unprocessable Content)" }, page.errors)
  end)
end)

describe("route option response", function()
  local MISMATCH = ": the response does not match the route's response schema: "

  it("under --reload logs a 200 body that does not match, and answers it unchanged", function()
    local srv = t.server{ app = "tests/apps/openapi", args = { "--reload" } }
    local mark = srv:mark()
    local res = assert(t.request(srv.port, "GET", "/wrong"))
    assert.are.same({ 200, { id = "x" } }, { res.status, res:json() })
    srv:wait_log("GET /wrong" .. MISMATCH .. "response%.id: Input should be a valid integer, unable to parse "
                 .. "string as an integer; "
                 .. "response%.name: Field required$", 10, mark)
    res = assert(t.request(srv.port, "GET", "/wrong_pooled"))   -- checked on the pool thread
    assert.are.same({ 200, { id = 1, name = 5 } }, { res.status, res:json() })
    srv:wait_log("GET /wrong_pooled" .. MISMATCH .. "response%.name: Input should be a valid "
                 .. "string$", 10, mark)
    assert.are.same(200, assert(t.request(srv.port, "GET", "/right")).status)
    srv:stop()
    local _, right = srv:stderr():find("GET /right", mark, true)
    assert.is_truthy(right)
    assert.is_nil(srv:stderr():find("does not match", right, true))
  end)

  it("is not checked without --reload", function()
    local srv = t.server{ app = "tests/apps/openapi" }
    assert.are.same(200, assert(t.request(srv.port, "GET", "/wrong")).status)
    assert.are.same(200, assert(t.request(srv.port, "GET", "/wrong_pooled")).status)
    srv:stop()
    assert.is_nil(srv:stderr():find("does not match", 1, true))
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
