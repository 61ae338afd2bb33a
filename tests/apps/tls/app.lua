-- HTTPS routes for tests/spec/tls_spec.lua: the server runs with --tls-cert/--tls-key; the
-- spec talks to it with curl, openssl s_client, Python's ssl and websockets, and moonlet's
-- own HTTP client (GET /fetch, this app calling itself). TLS_STATIC_DIR is served at /files.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "tls" }

app:get("/hello", function() return "hello over tls" end)

app:get("/scheme", function(req)
  return { scheme = req.scheme }
end)

app:get("/pool/scheme", { pool = true }, function(req)
  return { scheme = req.scheme }
end)

-- the body back as it came, whatever its size (up to --max-body)
app:post("/echo", function(req)
  return moonlet.response{ body = req.body,
                           headers = { ["content-type"] = "application/octet-stream" } }
end)

-- ?n=bytes of "x"
app:get("/big", function(req)
  return string.rep("x", tonumber(req.query.n))
end)

-- ?pause=s between the lines (0.02 by default)
app:get("/stream", function(req)
  local pause = tonumber(req.query.pause) or 0.02
  return moonlet.stream(function(send)
    for i = 1, 5 do
      assert(send("line " .. i .. "\n"))
      moonlet.sleep(pause)
    end
  end, { content_type = "text/plain" })
end)

app:get("/sse", function()
  return moonlet.sse(function(emit)
    for i = 1, 3 do
      emit{ event = "tick", id = tostring(i), data = "n" .. i }
      moonlet.sleep(0.02)
    end
  end)
end)

app:websocket("/ws", function(ws)
  while true do
    local data, kind = ws:receive()
    if not data then return end
    if kind == "binary" then ws:send_binary(data) else ws:send("echo " .. data) end
  end
end)

-- moonlet.http against this very server, over https: GET /fetch?path=/hello&ca=CAFILE
app:get("/fetch", function(req)
  local res, err = moonlet.http.request{
    url = "https://" .. req.headers.host .. req.query.path, ca_file = req.query.ca }
  if not res then return 502, { err = err } end
  return { status = res.status, body = res.body }
end)

local dir = os.getenv("TLS_STATIC_DIR")
if dir then app:static("/files", dir) end

return app
