-- moonlet.http from both kinds of route, for tests/spec/http_client_spec.lua. The spec
-- describes a call as JSON (POST /call); the app makes it and reports what came back.
-- The app is also its own upstream (/up/...), reached through the Host header.
local moonlet = require "moonlet"
local http = moonlet.http

local app = moonlet.app{ title = "client" }

local function report(res, err)
  if not res then return { err = err } end
  return { status = res.status, headers = res.headers, body = res.body }
end

-- { method, url, headers, body, ... } -> the same table with "{self}" in url replaced by
-- this server's address.
local function spec_of(req)
  local spec = req:json()
  if spec.url then spec.url = spec.url:gsub("{self}", req.headers.host, 1) end
  return spec
end

-- POST /call {request options}                 -> one request
-- POST /call {calls = {...}}                     -> several, one after the other
local function call(req)
  local spec = spec_of(req)
  if spec.calls then
    local out = {}
    for i, c in ipairs(spec.calls) do
      if c.url then c.url = c.url:gsub("{self}", req.headers.host, 1) end
      out[i] = report(http.request(c))
    end
    return { results = out }
  end
  return report(http.request(spec))
end
app:post("/call", call)
app:post("/pool/call", { pool = true }, call)

app:get("/get", function(req)
  return report(http.get((req.query.url:gsub("{self}", req.headers.host, 1))))
end)
app:get("/pool/get", { pool = true }, function(req)
  local res, err = http.get((req.query.url:gsub("{self}", req.headers.host, 1)))
  return { r = report(res, err), in_pool = moonlet.in_pool(), json = res and res:json() }
end)

-- A call inside moonlet.gather: its slot holds the response, or nil when the call failed.
app:get("/gather-get", function(req)
  local res = moonlet.gather(function() return http.get(req.query.url) end)
  return { type = type(res), status = res and res.status }
end)

-- Misuse raises: each case's error message.
app:get("/misuse", function()
  local cases = {
    no_url = function() return http.get() end,
    bad_scheme = function() return http.get("ftp://x/") end,
    bad_opts = function() return http.get("http://127.0.0.1:1/", 5) end,
    bad_timeout = function() return http.get("http://127.0.0.1:1/", { timeout = "x" }) end,
    bad_header = function() return http.get("http://127.0.0.1:1/", { headers = { ["x-a"] = "1\r\n2" } }) end,
    bad_body = function() return http.post("http://127.0.0.1:1/", true) end,
    bad_port = function() return http.get("http://127.0.0.1:70000/") end,
    request_type = function() return http.request("http://x/") end,
  }
  local out = {}
  for k, f in pairs(cases) do
    local ok, err = pcall(f)
    out[k] = ok and "no error" or tostring(err)
  end
  return out
end)

-- res:json() on a body that is not JSON
app:get("/bad-json", function(req)
  local res = assert(http.get("http://" .. req.headers.host .. "/up/text"))
  local v, err = res:json()
  return { v = v, err = err }
end)

-- the upstream side
app:route({ "GET", "POST", "PUT", "DELETE", "PATCH" }, "/up/echo", function(req)
  return { method = req.method, path = req.path, query = req.query, headers = req.headers,
           body = req.body }
end)
app:get("/up/text", function() return "plain text" end)
app:get("/up/status/{code:int}", function(req)
  return req.params.code, { code = req.params.code }, { ["x-up"] = "yes" }
end)
app:get("/up/big", function(req)
  return string.rep("x", tonumber(req.query.n))
end)
app:get("/up/slow", function(req)
  moonlet.sleep(tonumber(req.query.s))
  return { slept = tonumber(req.query.s) }
end)
app:get("/up/cookies", function()
  return moonlet.response{ status = 200, headers = { ["set-cookie"] = { "a=1", "b=2" } }, body = "ok" }
end)

-- At load time (no request yet) a call blocks: CLIENT_LOAD_URL is fetched while app.lua runs.
local load_result = {}
if os.getenv("CLIENT_LOAD_URL") then
  load_result = report(http.get(os.getenv("CLIENT_LOAD_URL"), { timeout = 5 }))
end
app:get("/load-result", function() return load_result end)

local flags = moonlet.shared.dict("client_flags")
app:get("/flag", function(req) return { v = flags:get(req.query.k) } end)

-- A request whose upstream never answers; the spec disconnects and checks the upstream
-- sees its connection closed.
app:get("/hang", function(req)
  local res, err = http.get("http://127.0.0.1:" .. req.query.port .. "/hang", { timeout = 30 })
  flags:set("hang_returned", true)
  return report(res, err)
end)

-- moonlet.timeout around a call: the call is cancelled, its connection closed.
app:get("/timeout-get", function(req)
  local url = "http://127.0.0.1:" .. req.query.port .. "/t"
  local res, err = moonlet.timeout(tonumber(req.query.s), http.get, url, { timeout = 30 })
  return { status = res and res.status, err = err }
end)

return app
