-- moonlet.stream and moonlet.sse: responses a producer writes in pieces.
--   return moonlet.stream(function(send) send("a") send("b") end, { content_type = "text/csv" })
--   return moonlet.sse(function(emit) emit{ event = "tick", data = { n = 1 } } end)
-- A handler returns the stream object; runtime.lua's dispatch finds it among the results
-- (after the middleware, which may add headers) and calls run, which writes the head and
-- runs the producer in the request's coroutine. The C side is core/bridge/stream.c.
local core = require "moonlet.core"
local ErrorPage = require "moonlet.error_page"

local type, error, tostring, pairs, setmetatable, getmetatable, xpcall, rawget, floor =
  type, error, tostring, pairs, setmetatable, getmetatable, xpcall, rawget, math.floor
local find, gsub, concat, sort = string.find, string.gsub, table.concat, table.sort
local traceback = debug.traceback
local stream_start, stream_send, stream_end = core.stream_start, core.stream_send, core.stream_end
local log, req_route, in_pool, json_encode = core.log, core.req_route, core.in_pool,
  core.json_encode

local _M = {}

---What moonlet.stream and moonlet.sse return: a handler returns it.
---@class moonlet.Stream
---@field status integer
---@field headers table<string, string>

---send(data) -> true, or nil, "closed" once the client has left; waits while it is slow.
---@alias moonlet.StreamSend fun(data: string): true|nil, string?

---An event: data (a table is sent as JSON), event, id, retry (ms).
---@alias moonlet.SseEvent {data?: any, event?: string, id?: string|number, retry?: integer}

---emit(event) -> true, or nil, "closed".
---@alias moonlet.SseEmit fun(event: moonlet.SseEvent): true|nil, string?

---@class moonlet.StreamOptions
---@field status? integer
---@field headers? table<string, string>
---@field content_type? string
---@field high_water? integer bytes buffered before send waits

---@class moonlet.SseOptions
---@field status? integer
---@field headers? table<string, string>
---@field keepalive? number|false seconds between comment pings (15)
---@field high_water? integer

local stream_mt = {}
_M.mt = stream_mt

local HIGH_WATER = 64 * 1024

function _M.is_stream(v)
  return type(v) == "table" and getmetatable(v) == stream_mt
end

-- level 3: the caller of the constructor that called argerr; 4 from new()
local function argerr(fname, n, what, level)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. what .. ")", level or 3)
end

-- Checks the options both constructors share; returns the stream object, not yet with
-- its producer.
local function new(fname, producer, opts, accepted)
  if type(producer) ~= "function" then argerr(fname, 1, "expected a producer function", 4) end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then argerr(fname, 2, "expected an options table", 4) end
  for k in pairs(opts) do
    if not accepted[k] then
      local names = {}
      for a in pairs(accepted) do names[#names + 1] = a end
      sort(names)
      argerr(fname, 2, "unknown option '" .. tostring(k) .. "'; accepted: "
                       .. concat(names, ", "), 4)
    end
  end
  local status = opts.status or 200
  if type(status) ~= "number" or status < 200 or status > 599 or floor(status) ~= status then
    argerr(fname, 2, "status must be an integer from 200 to 599", 4)
  end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then
    argerr(fname, 2, "headers must be a table", 4)
  end
  local high = opts.high_water or HIGH_WATER
  if type(high) ~= "number" or high < 0 or floor(high) ~= high then
    argerr(fname, 2, "high_water must be a number of bytes >= 0", 4)
  end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  return setmetatable({ status = status, headers = headers, high_water = high,
                        content_type = "text/plain; charset=utf-8", keepalive = 0 }, stream_mt)
end

local stream_opts = { status = true, headers = true, content_type = true, high_water = true }

---moonlet.stream(producer[, { status, content_type, headers, high_water }]): producer(send)
---writes the body; send(data) -> true, or nil, "closed" once the client has left.
---@param producer fun(send: moonlet.StreamSend)
---@param opts? moonlet.StreamOptions
---@return moonlet.Stream
function _M.stream(producer, opts)
  local s = new("stream", producer, opts, stream_opts)
  local ctype = opts and opts.content_type
  if ctype ~= nil then
    if type(ctype) ~= "string" or find(ctype, "[%c]") then
      argerr("stream", 2, "content_type must be a string without control characters")
    end
    s.content_type = ctype
  end
  s.producer = producer
  return s
end

-- --- Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html) ---

local function field(name, v)
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" or find(v, "[\r\n%z]") then
    error("bad argument #1 to 'emit' (" .. name .. " must be a string without CR, LF or NUL)", 3)
  end
  return v
end

local event_fields = { data = true, event = true, id = true, retry = true, comment = true }

-- One event's bytes: event, id, retry, then data (a table as JSON; each line of a string
-- as its own data: line), then the blank line that dispatches it.
local function event_bytes(ev)
  if type(ev) == "string" then ev = { data = ev } end
  if type(ev) ~= "table" then
    error("bad argument #1 to 'emit' (expected an event table { data, event, id, retry })", 2)
  end
  for k in pairs(ev) do
    if not event_fields[k] then
      error("bad argument #1 to 'emit' (unknown field '" .. tostring(k)
            .. "'; accepted: comment, data, event, id, retry)", 2)
    end
  end
  local out, n = {}, 0
  if ev.comment ~= nil then
    n = n + 1; out[n] = ": " .. field("comment", ev.comment) .. "\n"
  end
  if ev.event ~= nil then
    n = n + 1; out[n] = "event: " .. field("event", ev.event) .. "\n"
  end
  if ev.id ~= nil then
    n = n + 1; out[n] = "id: " .. field("id", ev.id) .. "\n"
  end
  local retry = ev.retry
  if retry ~= nil then
    if type(retry) ~= "number" or retry < 0 or floor(retry) ~= retry then
      error("bad argument #1 to 'emit' (retry must be an integer number of milliseconds >= 0)", 2)
    end
    n = n + 1; out[n] = ("retry: %d\n"):format(retry)
  end
  local data = ev.data
  if data ~= nil then
    local t = type(data)
    if t == "table" then
      data = json_encode(data)   -- one line: JSON escapes newlines
    elseif t == "number" or t == "boolean" then
      data = tostring(data)
    elseif t ~= "string" then
      error("bad argument #1 to 'emit' (data must be a string, a number or a table, not "
            .. t .. ")", 2)
    end
    n = n + 1; out[n] = "data: " .. gsub(gsub(data, "\r\n?", "\n"), "\n", "\ndata: ") .. "\n"
  end
  if n == 0 then
    error("bad argument #1 to 'emit' (an event needs data, event, id, retry or comment)", 2)
  end
  n = n + 1; out[n] = "\n"
  return concat(out, "", 1, n)
end
_M.event_bytes = event_bytes

local sse_opts = { status = true, headers = true, keepalive = true, high_water = true }

---moonlet.sse(producer[, { keepalive = 15, status, headers, high_water }]): producer(emit)
---sends events; emit{ data, event, id, retry } -> true, or nil, "closed".
---@param producer fun(emit: moonlet.SseEmit)
---@param opts? moonlet.SseOptions
---@return moonlet.Stream
function _M.sse(producer, opts)
  local s = new("sse", producer, opts, sse_opts)
  local keepalive = opts and opts.keepalive
  if keepalive == nil then keepalive = 15 end
  if keepalive == false then keepalive = 0 end
  if type(keepalive) ~= "number" or keepalive < 0 or keepalive >= 1e9 then
    argerr("sse", 2, "keepalive must be a number of seconds >= 0 (0 or false: none)")
  end
  s.content_type = "text/event-stream"
  s.keepalive = keepalive
  local h = s.headers
  local given = {}
  for k in pairs(h) do if type(k) == "string" then given[k:lower()] = true end end
  if not given["cache-control"] then h["cache-control"] = "no-cache" end
  if not given["x-accel-buffering"] then h["x-accel-buffering"] = "no" end
  s.producer = function(send)
    return producer(function(ev) return send(event_bytes(ev)) end)
  end
  return s
end

-- --- running a stream (runtime.lua's dispatch) ------------------------------------------

local function failed(req, msg)
  local w = rawget(req, "_after")
  if w then w.error = msg end
  log("error", msg)
end

-- Nothing is written yet: a 500 (with the error in development mode, error_page.lua).
local function refuse(req, msg)
  failed(req, msg)
  return ErrorPage.for_request(req, msg)
end

-- Answers the request with stream s (status and headers as the handler and middleware
-- left them): the head, then the producer in this coroutine, then the end. Returns the
-- status; C finds the response written. A pooled route cannot stream: 500 and a log line.
function _M.run(req, status, s, headers)
  local route = req_route(req._r) or "handler"
  if in_pool() then
    return refuse(req, route .. ": a { pool = true } route returned moonlet.stream or "
                  .. "moonlet.sse: streams are produced by coroutines on the event loop; drop "
                  .. "pool = true (or do the blocking work with moonlet.run_in_pool inside "
                  .. "the producer)")
  end
  local r, g = req._r, req._g
  local body, err = stream_start(r, g, status, s.content_type, headers, s.high_water,
                                 s.keepalive, ": ping\n\n")
  if body == nil then return refuse(req, route .. ": " .. err) end
  if body then
    local ok, e = xpcall(s.producer, traceback, function(data)
      return stream_send(r, g, data)
    end)
    if not ok then   -- the head is out: the stream is cut short, no page
      failed(req, route .. ": stream producer failed: " .. tostring(e))
      stream_end(r, g, false)
      return status
    end
  end
  stream_end(r, g, true)
  return status
end

return _M
