-- A chat over WebSocket: /echo answers each message, /chat sends every message to everyone
-- in the room. Open two terminals with a client (python3 -m websockets ws://127.0.0.1:8000/chat)
-- or the page at / in two browser tabs.
local moonlet = require "moonlet"
local app = moonlet.app{ title = "chat" }

app:websocket("/echo", function(ws)
  while true do
    local msg, kind = ws:receive()
    if not msg then return end             -- nil, "closed", code, reason
    if kind == "binary" then ws:send_binary(msg) else ws:send(msg) end
  end
end)

local room = {}                            -- the open sockets of /chat
app:websocket("/chat", function(ws)
  room[ws] = true
  while true do
    local msg = ws:receive()
    if not msg then break end
    local peers = {}                       -- a copy: the room may change while we send
    for peer in pairs(room) do peers[#peers + 1] = peer end
    for _, peer in ipairs(peers) do peer:send(msg) end   -- waits while a peer reads slowly
  end
  room[ws] = nil                           -- the handler returns: the socket closes (1000)
end)

app:get("/", function()
  return moonlet.response{ headers = { ["content-type"] = "text/html; charset=utf-8" }, body = [[
<!doctype html><meta charset="utf-8"><title>chat</title>
<input id="m" autofocus placeholder="say something, press Enter"><pre id="log"></pre>
<script>
const ws = new WebSocket(`ws://${location.host}/chat`);
ws.onmessage = (e) => { log.textContent += e.data + "\n"; };
m.onkeydown = (e) => { if (e.key === "Enter") { ws.send(m.value); m.value = ""; } };
</script>]] }
end)

return app
