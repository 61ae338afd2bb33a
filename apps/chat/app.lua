-- apps/chat: a chat room. GET / is the page (public/, served by app:static); WebSocket /ws
-- sends every text message it receives to everyone connected; GET /events streams each
-- message as a Server-Sent Event, so a browser without WebSocket can follow along;
-- POST /messages says something from plain HTTP (curl, a bot); GET /stats counts the
-- messages. /echo answers each message back (a WebSocket to try clients with).
--   build/moonlet serve apps/chat     then open http://127.0.0.1:8000/ in two tabs
--
-- One process's clients are one room. With REDIS_URL set (redis://host:port/db) every
-- message goes through Redis pub/sub instead: each process subscribes once to the channel
-- (a task its startup hook starts, not one per client) and hands what it hears to its own
-- sockets and streams, so the hosts behind a load balancer, and the --workers of each,
-- make one room; the count is a Redis counter all of them see (without Redis it is a
-- moonlet.shared counter: one machine's workers). See README "Scaling out".
local moonlet = require "moonlet"
local s = moonlet.schema

local app = moonlet.app{ title = "chat" }

local REDIS_URL = os.getenv("REDIS_URL")
local CHANNEL = "chat"           -- the pub/sub channel
local COUNT_KEY = "chat:count"   -- messages said, in Redis or in moonlet.shared's dict "chat"

local room = {}                  -- this process's open sockets of /ws
local said = moonlet.cond()      -- wakes this process's /events streams with each message

-- Hands a message to this process's clients.
local function deliver(text)
  local peers = {}               -- a copy: the room may change while we send
  for peer in pairs(room) do peers[#peers + 1] = peer end
  for _, peer in ipairs(peers) do peer:send(text) end   -- waits while a peer reads slowly
  said:notify_all(text)
end

-- Says text to the room (every host's with Redis); returns the message's number (the
-- count so far), or nil, err when Redis cannot be reached (the message is not sent).
local function say(text)
  local r = app.state.redis
  if not r then
    local n = moonlet.shared.dict("chat"):incr(COUNT_KEY, 1, 0)
    deliver(text)
    return n
  end
  local n, err = r:incr(COUNT_KEY)
  if not n then return nil, err end
  local ok, perr = r:publish(CHANNEL, text)
  if not ok then return nil, perr end
  return n
end

-- The subscription's life: what it hears goes to deliver; when it ends (Redis restarted,
-- the connection cut) it is made again, after a pause, until the stop cancels this task.
-- Messages published while it is down are not seen here (pub/sub keeps nothing).
local function listen(sub)
  while true do
    for msg in sub:messages() do deliver(msg.data) end
    moonlet.log.warn("chat: the subscription to Redis channel " .. CHANNEL .. " ended ("
                     .. tostring(sub.err) .. "); subscribing again")
    sub:close()
    repeat
      moonlet.sleep(1)
      local err
      sub, err = app.state.redis:subscribe(CHANNEL)
      if not sub then moonlet.log.warn("chat: cannot subscribe: " .. tostring(err)) end
    until sub
    moonlet.log.info("chat: subscribed to Redis channel " .. CHANNEL .. " again")
  end
end

if REDIS_URL then
  app:on_startup(function()
    -- subscribed before the first client connects: a message said after `listening on`
    -- reaches this process's clients
    local r = assert(moonlet.redis.connect(REDIS_URL))
    local sub = assert(r:subscribe(CHANNEL))
    app.state.redis = r
    moonlet.log.info("chat: subscribed to Redis channel " .. CHANNEL)
    moonlet.spawn(listen, sub)   -- the app's task: cancelled at the stop
  end)
end

app:websocket("/ws", function(ws)
  room[ws] = true
  while true do
    local msg, kind = ws:receive()
    if not msg then break end    -- nil, "closed", code, reason
    if kind == "text" then
      local ok, err = say(msg)
      if not ok then moonlet.log.warn("chat: message lost: " .. tostring(err)) end
    end
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

app:post("/messages", {
  body = s.object({ text = s.string{ min_length = 1, max_length = 4096 } }),
}, function(req)
  local n, err = say(req:json().text)
  if not n then
    moonlet.log.warn("chat: message lost: " .. tostring(err))
    error(moonlet.http_error(503, "chat is unavailable"))
  end
  return 201, { n = n }
end)

app:get("/stats", function()
  local n
  if app.state.redis then
    local v, err = app.state.redis:get(COUNT_KEY)
    if not v then error(moonlet.http_error(503, "chat is unavailable: " .. tostring(err))) end
    n = tonumber(v) or 0           -- moonlet.null before the first message
  else
    n = moonlet.shared.dict("chat"):get(COUNT_KEY) or 0
  end
  return { messages = n }
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
