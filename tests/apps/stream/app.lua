-- moonlet.stream and moonlet.sse, for tests/spec/stream_spec.lua. What a producer did is
-- kept in moonlet.shared's "stream" dictionary, which GET /state reads back.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "stream" }
local state = moonlet.shared.dict("stream")

app:use(function(req, next)   -- a middleware adds a header to every response, streams too
  local res = next(req)
  res.headers["x-mw"] = "seen"
  return res
end)
app:use(moonlet.middleware.gzip{ min_size = 1 })

app:get("/state", function(req)
  return { value = state:get(req.query.key) }
end)

-- ?n=3: "line 1\n" .. "line n\n", one send each
app:get("/count", function(req)
  local n = tonumber(req.query.n) or 3
  return moonlet.stream(function(send)
    for i = 1, n do assert(send("line " .. i .. "\n")) end
    assert(send(""))   -- nothing: an empty chunk would end the body
  end, { content_type = "text/plain", headers = { ["x-stream"] = "yes" } })
end)

-- status and headers through moonlet.response and the middleware
app:get("/created", function()
  return moonlet.response{ status = 201, headers = { ["x-custom"] = "1" },
                           body = moonlet.stream(function(send) send("made") end) }
end)

-- ?mb=100: that many MiB in 64 KiB sends; state "big" counts the bytes produced
app:get("/big", function(req)
  local mb = tonumber(req.query.mb) or 100
  local piece = string.rep("x", 65536)
  state:set("big", 0)
  return moonlet.stream(function(send)
    for i = 1, mb * 16 do
      if not send(piece) then return end
      state:set("big", i * 65536)
    end
  end, { content_type = "application/octet-stream" })
end)

-- a producer that waits between sends; req:defer notes why the request ended
app:get("/ticks", function(req)
  state:set("ticks", 0)
  state:delete("ticks_end")
  req:defer(function(err) state:set("ticks_end", tostring(err)) end)
  return moonlet.stream(function(send)
    for i = 1, 1000 do
      assert(send("tick " .. i .. "\n"))
      state:set("ticks", i)
      moonlet.sleep(0.05)
    end
  end)
end)

-- sends, then fails
app:get("/fail", function()
  return moonlet.stream(function(send)
    send("partial\n")
    moonlet.sleep(0.01)
    error("producer broke")
  end)
end)

-- a stream whose status or headers are bad: a 500 before any byte of it
app:get("/bad-header", function()
  return moonlet.stream(function(send) send("never") end, { headers = { ["x-bad"] = "a\r\nb" } })
end)

app:get("/pooled", { pool = true }, function()
  return moonlet.stream(function(send) send("never") end)
end)

-- Server-Sent Events: ?wait=0.5 keeps it idle that long (keepalive pings every 0.2 s)
app:get("/events", function(req)
  local wait = tonumber(req.query.wait) or 0
  return moonlet.sse(function(emit)
    emit{ data = { list = moonlet.array{ "a", 1 } } }   -- one key: a fixed order
    emit{ event = "note", id = "7", data = "first line\nsecond line\r\nthird" }
    emit{ retry = 1500, data = 42 }
    emit{ comment = "just a comment" }
    emit("plain")
    emit{ data = "last-event-id: " .. tostring(req.headers["last-event-id"]) }
    if wait > 0 then moonlet.sleep(wait) end
    emit{ event = "end", data = "bye" }
  end, { keepalive = 0.2, headers = { ["x-sse"] = "1" } })
end)

-- bad events: the producer raises at emit, the stream is cut
app:get("/bad-event", function(req)
  return moonlet.sse(function(emit)
    emit{ data = "ok" }
    if req.query.kind == "id" then emit{ id = "a\nb", data = "x" } end
    if req.query.kind == "retry" then emit{ retry = 1.5, data = "x" } end
    emit{ nope = 1 }
  end)
end)

-- for a real EventSource client: ids 1 and 2, then the stream ends; the client comes
-- back with Last-Event-ID: 2 and gets 3 (resumed)
app:get("/feed", function(req)
  local last = tonumber(req.headers["last-event-id"]) or 0
  return moonlet.sse(function(emit)
    emit{ retry = 100 }
    if last == 0 then
      emit{ id = "1", data = { n = 1 } }
      emit{ id = "2", event = "update", data = "two\nlines" }
    else
      emit{ id = tostring(last + 1), data = "resumed after " .. last }
      moonlet.sleep(5)
    end
  end)
end)

-- 8 MiB at once (more than the kernel takes while the client waits), a pause, then "end":
-- the pause of a stream in flight is not a timeout (spec: with --header-timeout 0.5)
app:get("/burst-idle", function()
  return moonlet.stream(function(send)
    assert(send(string.rep("b", 8 * 1024 * 1024)))
    moonlet.sleep(1.2)
    assert(send("end"))
  end)
end)

-- 8 MiB that never wait for the output (high_water beyond it): send still lets the loop
-- run every MiB, which a spawned task counts; the last line says how often
app:get("/fair", function()
  local turns, done = 0, false
  moonlet.spawn(function()
    while not done do turns = turns + 1; moonlet.sleep(0) end
  end)
  return moonlet.stream(function(send)
    local start, piece = turns, string.rep("f", 65536)
    for _ = 1, 128 do send(piece) end
    done = true
    send("\nturns " .. (turns - start) .. "\n")
  end, { high_water = 1e9 })
end)

-- send from a task that is not the producer
app:get("/spawned-send", function()
  return moonlet.stream(function(send)
    local done = false
    moonlet.spawn(function()
      local _, err = pcall(send, "from a task")
      state:set("spawned", tostring(err))
      done = true
    end)
    while not done do moonlet.sleep(0.01) end
    send("ok")
  end)
end)

-- the constructors' argument errors, as a JSON list of messages
app:get("/bad-args", function()
  local out = {}
  local function try(f, ...)
    local ok, err = pcall(f, ...)
    out[#out + 1] = ok and "no error" or err
  end
  local nop = function() end
  try(function() local s = moonlet.stream("nope"); return s end)   -- names this line
  try(moonlet.stream, nop, { statuss = 200 })
  try(moonlet.stream, nop, { status = 99 })
  try(moonlet.stream, nop, { content_type = 5 })
  try(moonlet.stream, nop, { high_water = -1 })
  try(moonlet.sse, nop, { keepalive = -1 })
  try(moonlet.sse, nop, { content_type = "text/plain" })
  return out
end)

return app
