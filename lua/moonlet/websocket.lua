-- WebSocket routes (app:websocket): the options, the handshake, and the `ws` object a
-- handler gets. The connection itself is C's (core/bridge/websocket.c over
-- core/http/ws_conn.c); this module adds the methods.
local core = require "moonlet.core"

local type, error, setmetatable, rawget, rawset, ipairs, tostring, require, floor =
  type, error, setmetatable, rawget, rawset, ipairs, tostring, require, math.floor
local find = string.find
local ws_handshake, ws_accept, ws_receive, ws_send, ws_ping, ws_close, ws_done =
  core.ws_handshake, core.ws_accept, core.ws_receive, core.ws_send, core.ws_ping,
  core.ws_close, core.ws_done

local _M = {}

---app:websocket's options.
---@class moonlet.WebSocketOptions: moonlet.RouteOptions
---@field subprotocols? string[] the server's choices
---@field origins? string[] allowed Origin values
---@field idle_timeout? number seconds (60; 0: never)
---@field close_timeout? number seconds (5)
---@field max_message? integer bytes (default --ws-max-message)

---The `ws` an app:websocket handler gets.
---@class moonlet.WebSocket
local WS = {}
_M.mt = { __index = WS }

---ws:receive() -> data, "text" | "binary"; or nil, "closed", code, reason once the close
---handshake began (the peer's code when it closed first, 1006 when it vanished). Waits.
---@return string|nil data
---@return "text"|"binary"|"closed" kind
---@return integer? code
---@return string? reason
function WS:receive()
  return ws_receive(self._u)
end

---ws:send(text) -> true, or nil, "closed". Waits while the client is slow to read.
---@param text string
---@return true|nil ok
---@return string? err
function WS:send(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'send' (expected a string, got " .. type(text) .. ")", 2)
  end
  return ws_send(self._u, text, false)
end

---ws:send_binary(data) -> true, or nil, "closed"
---@param data string
---@return true|nil ok
---@return string? err
function WS:send_binary(data)
  if type(data) ~= "string" then
    error("bad argument #1 to 'send_binary' (expected a string, got " .. type(data) .. ")", 2)
  end
  return ws_send(self._u, data, true)
end

---ws:ping([data]) -> true, or nil, "closed" (the client's pong is not reported)
---@param data? string
---@return true|nil ok
---@return string? err
function WS:ping(data)
  return ws_ping(self._u, data)
end

---ws:close([code[, reason]]) -> true, or nil, "closed": begins the close handshake
---(default 1000); the handler may go on (ws:receive then says "closed").
---@param code? integer
---@param reason? string
---@return true|nil ok
---@return string? err
function WS:close(code, reason)
  return ws_close(self._u, code, reason)
end

local function is_token(s)
  return type(s) == "string" and s ~= "" and not find(s, "[^%w!#%$%%&'%*%+%-%.%^_`|~]")
end

local function list_of(v, check)
  if type(v) ~= "table" or #v == 0 then return false end
  for _, x in ipairs(v) do
    if not check(x) then return false end
  end
  return true
end

local function seconds(v, name, default, min)
  if v == nil then return default end
  if type(v) ~= "number" or v < min or v >= 1e9 then
    return nil, "option " .. name .. " must be a number of seconds >= " .. min .. ", got "
                .. tostring(v)
  end
  return v
end

-- options(opts) -> what a websocket route needs, or nil, why. opts: subprotocols (a list
-- of tokens, the server's choices), origins (a list of allowed Origin values), idle_timeout
-- (seconds, 60; 0: never), close_timeout (seconds, 5), max_message (bytes; default
-- --ws-max-message).
function _M.options(opts)
  if opts.pool then
    return nil, "a WebSocket handler runs on the event loop: option pool is not supported"
  end
  local spec, why = {}, nil
  if opts.subprotocols ~= nil then
    if not list_of(opts.subprotocols, is_token) then
      return nil, "option subprotocols must be a list of tokens, such as { \"chat\" }"
    end
    spec.subprotocols = opts.subprotocols
  end
  if opts.origins ~= nil then
    if not list_of(opts.origins, function(x) return type(x) == "string" end) then
      return nil, "option origins must be a list of strings, such as { \"https://app.example\" }"
    end
    spec.origins = opts.origins
  end
  spec.idle_timeout, why = seconds(opts.idle_timeout, "idle_timeout", 60, 0)
  if why then return nil, why end
  spec.close_timeout, why = seconds(opts.close_timeout, "close_timeout", 5, 0.001)
  if why then return nil, why end
  local max = opts.max_message
  if max ~= nil and (type(max) ~= "number" or max < 1 or max ~= floor(max) or max > 2^53) then
    return nil, "option max_message must be a positive integer number of bytes, got "
                .. tostring(max)
  end
  spec.max_message = max
  return spec
end

-- The route's handler as the framework calls it, inside the handshake check, validation
-- and dependencies: answers 101, then runs handler(ws, req). When it returns, the socket
-- closes with 1000 (unless it was closed); when it raises, with 1011 (C: ml_websocket_end).
function _M.handler(spec, handler)
  return function(req)
    local proto = rawget(req, "_ws_protocol")
    local u = ws_accept(req._r, req._g, proto, spec.max_message, spec.idle_timeout,
                        spec.close_timeout)
    rawset(req, "_ws_open", true)   -- from here an http_error cannot answer (runtime.finish)
    handler(setmetatable({ _u = u, subprotocol = proto }, _M.mt), req)
    ws_done(u)
  end
end

-- The outermost wrapper: a request that is no valid handshake for this route is answered
-- over HTTP (426, 400, 403) before validation and dependencies run.
function _M.check(spec, inner)
  local subprotocols, origins = spec.subprotocols, spec.origins
  return function(req)
    local ok, a, b = ws_handshake(req._r, req._g, subprotocols, origins)
    if not ok then
      local headers
      if a == 426 then headers = { upgrade = "websocket", ["sec-websocket-version"] = "13" } end
      error(require("moonlet").http_error(a, b, headers), 0)
    end
    rawset(req, "_ws_protocol", a)
    return inner(req)
  end
end

return _M
