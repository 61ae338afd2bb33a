-- What handlers return, and how it goes on the wire, for tests/spec/response_spec.lua.
-- Every route exists twice: /co/... runs as a coroutine, /pool/... on a pool thread; both
-- kinds must answer byte for byte alike.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "responses" }

local function routes(prefix, opts)
  app:get(prefix .. "/lone-number", opts, function() return 42 end)
  app:get(prefix .. "/lone-nil", opts, function() return nil end)
  app:post(prefix .. "/echo", opts, function(req) return req:json() end)
  app:get(prefix .. "/no-content", opts, function() return 204, nil end)
  -- ?s=<number> returns that status; any other s is returned as it is (a string)
  app:get(prefix .. "/status", opts, function(req)
    return tonumber(req.query.s) or req.query.s, "x"
  end)
  app:get(prefix .. "/nil-err", opts, function() return nil, "not found" end)
  -- ?name=value&... become response headers
  app:get(prefix .. "/headers", opts, function(req) return 200, "x", req.query end)
  app:get(prefix .. "/headers-not-table", opts, function() return 200, "x", "oops" end)
  app:get(prefix .. "/close", opts, function(req)
    return 200, string.rep("b", tonumber(req.query.n) or 3),
           { connection = req.query.c or "close" }
  end)
  app:get(prefix .. "/items/{id:int}", opts, function(req) return { id = req.params.id } end)
  -- ?s=<bytes> as a value, then as a key
  app:get(prefix .. "/utf8", opts, function(req) return { req.query.s } end)
  app:get(prefix .. "/utf8-key", opts, function(req) return { [req.query.s] = 1 } end)
  -- moonlet.json.decode and the HTTP client's res:json() on the request body
  app:post(prefix .. "/decode", opts, function(req)
    local ok, v = pcall(moonlet.json.decode, req.body)
    return { ok = ok, err = not ok and v or nil }
  end)
  app:post(prefix .. "/client-json", opts, function(req)
    local res = assert(moonlet.http.post("http://" .. req.headers.host .. "/raw", req.body))
    local v, err = res:json()
    return { ok = v ~= nil, err = err }
  end)
  app:get(prefix .. "/array", opts, function(req)
    local kind = req.query.kind
    if kind == "hole" then return moonlet.array{ nil, 5 } end
    if kind == "holes" then return moonlet.array{ 1, nil, nil, 4 } end
    if kind == "length" then return moonlet.array({ 5 }, 3) end
    if kind == "n" then return moonlet.array{ 7, n = 2 } end
    if kind == "empty" then return moonlet.array({}, 0) end
    if kind == "sparse" then return moonlet.array{ [100000] = 1 } end
    if kind == "keys" then return moonlet.array{ 1, name = "x" } end
    if kind == "beyond" then return moonlet.array({ 1, 2, 3 }, 2) end
    if kind == "encode" then
      return { s = moonlet.json.encode(moonlet.array{ nil, "x" }) }
    end
    return { plain_hole = { [2] = 5 } }
  end)
  -- the request as the handler sees it: the fields req holds before any is read, then
  -- the lazy ones
  app:get(prefix .. "/req/{name}/{n:int}", opts, function(req)
    local fields = {}
    for k, v in pairs(req) do fields[#fields + 1] = k .. ":" .. type(v) end
    table.sort(fields)
    return { fields = fields, method = req.method, path = req.path, params = req.params,
             url = req.url, query = req.query, rep = req.headers["x-rep"],
             cookie = req:header("COOKIE"), body = req.body }
  end)
  app:post(prefix .. "/form", opts, function(req) return req:form() end)
  -- req:header before req.headers exists: read from the request, no table made
  app:get(prefix .. "/header", opts, function(req)
    return { rep = req:header("X-Rep"), cookie = req:header("cookie"),
             none = req:header("x-none") or "absent", one = req:header("HOST"),
             built = rawget(req, "headers") ~= nil }
  end)
  -- a req kept from the request before (in this Lua state) reads its headers
  local kept
  app:get(prefix .. "/kept", opts, function(req)
    local prev = kept
    kept = req
    if not prev then return { first = true } end
    local ok, err = pcall(function() return prev.headers end)
    return { ok = ok, err = err }
  end)
end

routes("/co", nil)
routes("/pool", { pool = true })

app:get("/text", function() return "plain" end)
app:post("/raw", function(req) return req.body end)

return app
