-- WebSocket routes for tests/spec/websocket_spec.lua.
local moonlet = require "moonlet"
local app = moonlet.app{ title = "websocket" }
local events = moonlet.shared.dict("ws_events")   -- what handlers saw, for the spec to read

-- echo: text and binary back as they came; "close CODE REASON" closes with them
app:websocket("/echo", function(ws)
  while true do
    local data, kind, code, reason = ws:receive()
    if not data then
      events:set("echo_closed", code .. " " .. reason)
      return
    end
    local c, why = data:match("^close (%d+) ?(.*)$")
    if c then
      ws:close(tonumber(c), why)
    elseif data == "ping me" then
      ws:ping("hello")
      ws:send("pinged")
    elseif kind == "binary" then
      ws:send_binary(data)
    else
      ws:send(data)
    end
  end
end)

-- path parameters, dependencies and req:defer
local function user(req)
  req:defer(function(err) events:set("defer_ran", tostring(err)) end)
  return req.query.user or "anonymous"
end
app:websocket("/rooms/{room:int}", { deps = { user = user } }, function(ws, req)
  -- url and headers read after the 101: the request's bytes were shrunk to fit then
  ws:send(moonlet.json.encode({ room = req.params.room, user = req.deps.user,
                                agent = req.headers["x-agent"], url = req.url }))
  ws:receive()
end)

-- a dependency that refuses: an HTTP answer, no upgrade
app:websocket("/private", { deps = { auth = function(req)
  if req.headers["authorization"] ~= "Bearer yes" then error(moonlet.http_error(401)) end
  return true
end } }, function(ws) ws:send("welcome") end)

app:websocket("/proto", { subprotocols = { "chat.v2", "chat.v1" } }, function(ws)
  ws:send(ws.subprotocol or "none")
end)

app:websocket("/origin", { origins = { "https://good.example" } }, function(ws)
  ws:send("hello")
end)

app:websocket("/idle", { idle_timeout = 0.4 }, function(ws)
  local _, _, code, reason = ws:receive()
  events:set("idle_closed", code .. " " .. reason)
end)

app:websocket("/small", { max_message = 100 }, function(ws)
  local _, _, code = ws:receive()
  events:set("small_closed", code)
end)

app:websocket("/fail", function(ws)
  ws:send("about to fail")
  error("boom")
end)

app:websocket("/fail/http_error", function(ws)
  ws:send("about to fail")
  error(moonlet.http_error(403, "too late for HTTP"))
end)

-- the server talks while the client does not read: sends wait (backpressure)
app:websocket("/flood", function(ws)
  local chunk = string.rep("x", 64 * 1024)
  local sent = 0
  events:set("flood_sent", 0)
  for _ = 1, 4000 do   -- 250 MiB if nothing waited
    if not ws:send(chunk) then break end
    sent = sent + 1
    events:set("flood_sent", sent)
  end
  events:set("flood_done", sent)
end)

-- a broadcast room: every message goes to everyone; leavers are removed
local members = {}
app:websocket("/chat", function(ws)
  members[ws] = true
  while true do
    local msg = ws:receive()
    if not msg then break end
    for m in pairs(members) do m:send(msg) end
  end
  members[ws] = nil
  events:incr("chat_left", 1, 0)
end)
app:get("/chat/size", function()
  local n = 0
  for _ in pairs(members) do n = n + 1 end
  return { members = n }
end)

app:get("/events", function()
  local out = {}
  for _, k in ipairs(events:keys()) do out[k] = events:get(k) end
  return out
end)

app:get("/hello", function() return { message = "hello" } end)

return app
