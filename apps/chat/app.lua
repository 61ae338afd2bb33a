-- apps/chat: a chat room. GET / is the page (public/, served by app:static); WebSocket /ws
-- sends every text message it receives to everyone connected; GET /events streams each
-- message as a Server-Sent Event, so a browser without WebSocket can follow along.
-- /echo answers each message back (a WebSocket to try clients with).
--   build/moonlet serve apps/chat     then open http://127.0.0.1:8000/ in two tabs
local moonlet = require "moonlet"

local app = moonlet.app{ title = "chat" }

local room = {}                  -- the open sockets of /ws
local said = moonlet.cond()      -- wakes the /events streams with each message

local function broadcast(text)
  local peers = {}               -- a copy: the room may change while we send
  for peer in pairs(room) do peers[#peers + 1] = peer end
  for _, peer in ipairs(peers) do peer:send(text) end   -- waits while a peer reads slowly
  said:notify_all(text)
end

app:websocket("/ws", function(ws)
  room[ws] = true
  while true do
    local msg, kind = ws:receive()
    if not msg then break end    -- nil, "closed", code, reason
    if kind == "text" then broadcast(msg) end
  end
  room[ws] = nil                 -- the handler returns: the socket closes (1000)
end)

app:get("/events", function()
  return moonlet.sse(function(emit)
    while true do
      local text = said:wait()
      if not emit{ event = "message", data = { text = text } } then return end
    end
  end, { keepalive = 15 })
end)

app:websocket("/echo", function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg then return end
    if kind == "binary" then ws:send_binary(msg) else ws:send(msg) end
  end
end)

app:static("/", "public", { max_age = 60 })   -- index.html, chat.js, chat.css

return app
