-- moonlet: the module handlers and apps use.
--   local moonlet = require "moonlet"
--   local app = moonlet.app{ title = "Demo" }
local core = require "moonlet.core"
local App = require "moonlet.app"
local cjson = require "cjson"

local setmetatable, type, tostring = setmetatable, type, tostring
local error, floor = error, math.floor

local _M = { _VERSION = "0.1.0" }

_M.app = App.new
_M.sleep = core.sleep
_M.now = core.now
_M.null = cjson.null   -- a JSON null: decodes from null, encodes to null

-- moonlet.array(t): marks t as a JSON array, so an empty one encodes as [] (not {}).
local array_mt = core.array_mt
function _M.array(t)
  return setmetatable(t or {}, array_mt)
end

local http_error_mt = { __tostring = function(e)
  return "HTTP " .. e.status .. ": " .. tostring(e.detail)
end }
_M.http_error_mt = http_error_mt

-- error(moonlet.http_error(404, "Item not found")) answers 404 {"detail": "Item not found"}.
function _M.http_error(status, detail, headers)
  if type(status) ~= "number" or status < 400 or status > 599 or floor(status) ~= status then
    error("bad argument #1 to 'http_error' (expected a status 400-599)", 2)
  end
  if headers ~= nil and type(headers) ~= "table" then
    error("bad argument #3 to 'http_error' (expected a headers table)", 2)
  end
  return setmetatable({ status = status, detail = detail, headers = headers }, http_error_mt)
end

local response_mt = {}
_M.response_mt = response_mt

-- moonlet.response{ status = 201, headers = {...}, body = "..." | table }
function _M.response(t)
  if type(t) ~= "table" then
    error("bad argument #1 to 'response' (expected a table)", 2)
  end
  if t.status ~= nil and type(t.status) ~= "number" then
    error("bad argument #1 to 'response' (status must be a number)", 2)
  end
  return setmetatable(t, response_mt)
end

_M.json = {
  encode = core.json_encode,
  decode = cjson.decode,
  null = cjson.null,
  array = _M.array,
}

local log = core.log
_M.log = {
  debug = function(msg) log("debug", tostring(msg)) end,
  info = function(msg) log("info", tostring(msg)) end,
  warn = function(msg) log("warn", tostring(msg)) end,
  error = function(msg) log("error", tostring(msg)) end,
}

return _M
