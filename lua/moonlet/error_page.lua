-- The 500 a Lua error answers. Outside development mode it is always
-- {"detail":"Internal Server Error"} (the traceback goes to the log only). In development
-- mode (`moonlet serve --debug` or `--reload`, ml_config_t.debug, the test client's
-- { debug = true }: core.dev_mode()) it carries the error: an HTML page for a client whose
-- Accept names text/html (a browser), else JSON {"detail": message, "traceback": [lines]}.
-- Called by runtime.lua (a handler, middleware or dependency raised), stream.lua, and C
-- (core/bridge/error_page.c: a response that could not be serialized).
local core = require "moonlet.core"

local type, tostring, ipairs, setmetatable = type, tostring, ipairs, setmetatable
local find, sub, gsub, lower, match, gmatch =
  string.find, string.sub, string.gsub, string.lower, string.match, string.gmatch
local concat = table.concat
local dev_mode, array_mt, json_encode = core.dev_mode, core.array_mt, core.json_encode

local _M = {}

local internal_error = { detail = "Internal Server Error" }
_M.internal_error = internal_error

-- A frame of moonlet's own dispatch ("[C]: in function 'xpcall'", lua/moonlet/*.lua).
local function moonlet_frame(line)
  return find(line, "^%[C%]") or find(line, "^lua/moonlet/")
end

-- "message\nstack traceback:\n\tline\n\tline" -> message, { "line", "line" }, without
-- the frames of moonlet's dispatch that end every traceback (the log has them all). A
-- message without a traceback (a response C could not serialize) has an empty list.
function _M.split(e)
  e = tostring(e)
  local at = find(e, "\nstack traceback:\n", 1, true)
  local lines = setmetatable({}, array_mt)   -- [] in JSON even when empty
  if not at then return e, lines end
  for line in gmatch(sub(e, at + #"\nstack traceback:\n"), "[^\n]+") do
    lines[#lines + 1] = (gsub(line, "^%s+", ""))
  end
  local n = #lines
  while n > 0 and moonlet_frame(lines[n]) do n = n - 1 end
  if n > 0 then
    for i = #lines, n + 1, -1 do lines[i] = nil end
  end
  return sub(e, 1, at - 1), lines
end

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
              ["'"] = "&#39;" }

local function esc(s)
  return (gsub(tostring(s), "[&<>\"']", ESC))
end

local STYLE = [[
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#b3261e;color:#fff;padding:16px 24px}
header h1{font-size:20px;margin:0}header p{margin:4px 0 0;opacity:.9}
main{padding:8px 24px 24px}h2{font-size:15px;margin:20px 0 6px;color:#555}
pre{font:13px/1.5 ui-monospace,Menlo,Consolas,monospace;margin:0;white-space:pre-wrap;
word-break:break-word}
.msg{background:#fff;border:1px solid #e0c4c2;border-left:4px solid #b3261e;padding:12px}
ol{background:#fff;border:1px solid #ddd;margin:0;padding:8px 8px 8px 48px}
li{font:13px/1.6 ui-monospace,Menlo,Consolas,monospace}.at{color:#0b57d0;font-weight:600}
footer{color:#777;font-size:13px;padding:0 24px 24px}]]

-- One traceback line, its file:line part (if it starts with one) set apart.
local function tb_line(line)
  local at, rest = match(line, "^([^:%s]+:%d+):(.*)$")
  if at then return '<li><span class="at">' .. esc(at) .. "</span>:" .. esc(rest) .. "</li>" end
  return "<li>" .. esc(line) .. "</li>"
end

-- The HTML page: self-contained (no script, no external asset), everything escaped.
function _M.html(method, path, message, lines)
  local out = {
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width,initial-scale=1">',
    "<title>500 Internal Server Error: ", esc(method), " ", esc(path), "</title>",
    "<style>", STYLE, "</style></head><body>",
    "<header><h1>500 Internal Server Error</h1><p>", esc(method), " ", esc(path),
    "</p></header><main><h2>Error</h2><pre class=\"msg\">", esc(message), "</pre>",
    "<h2>Traceback</h2>",
  }
  if #lines == 0 then
    out[#out + 1] = "<p>(none: the error was found after the handler returned)</p>"
  else
    out[#out + 1] = "<ol>"
    for _, line in ipairs(lines) do out[#out + 1] = tb_line(line) end
    out[#out + 1] = "</ol>"
  end
  out[#out + 1] = "</main><footer>moonlet development mode (--debug or --reload): "
                  .. "this page is never shown without it.</footer></body></html>\n"
  return concat(out)
end

-- Whether the Accept header value names text/html (Starlette's test, as browsers send).
local function wants_html(accept)
  return type(accept) == "string" and find(lower(accept), "text/html", 1, true) ~= nil
end

-- response(method, path, accept, e) -> 500, body, headers: the 500 for error e (a message,
-- with its traceback if it has one). Outside development mode, the plain one.
function _M.response(method, path, accept, e)
  if not dev_mode() then return 500, internal_error, nil end
  local message, lines = _M.split(e)
  if wants_html(accept) then
    return 500, _M.html(method, path, message, lines),
           { ["content-type"] = "text/html; charset=utf-8" }
  end
  -- encoded here: "detail" first, as a reader looks for it
  return 500, '{"detail":' .. json_encode(message) .. ',"traceback":' .. json_encode(lines)
              .. "}", { ["content-type"] = "application/json" }
end

-- for_request(req, e) -> 500, body, headers: response() for the request req.
function _M.for_request(req, e)
  if not dev_mode() then return 500, internal_error, nil end
  return _M.response(req.method, req.path, req.headers.accept, e)
end

return _M
