-- moonlet.cli.routes: `moonlet routes APPDIR` loads the app as the test client does
-- (moonlet.app's load_dir, then runtime.routes as `moonlet serve` would) and prints its
-- route table, in aligned columns, in the order the routes were registered:
--
--   METHOD    PATH                 MODE       DEPS     HANDLER
--   GET       /items/{id:int}      loop       db,user  myapp/app.lua:12
--   POST      /report              pool       -        myapp/reports.lua:30
--   GET       /ws                  websocket  -        myapp/app.lua:40
--   GET,HEAD  /static/{path:path}  static     -        myapp/public
--   GET       /openapi.json        loop       -        (moonlet: OpenAPI document)
--
-- MODE: loop (a coroutine on the event loop), pool (a pool thread), websocket, static
-- (files served by C). DEPS: the names in req.deps (the app's, its routers' and the
-- route's). HANDLER: where the handler function is defined; a static mount's directory.
-- The middleware follows, outermost first, if the app has any.
--
--   rows(app, appdir)   the table as a list of { method, path, mode, deps, handler }
--   main(args)          args = { APPDIR }; prints the table, returns the exit status (2: the
--                       app does not load; its error on stderr in one line, as from serve)
local App = require "moonlet.app"
local cli = require "moonlet.cli"
local deps = require "moonlet.deps"
local runtime = require "moonlet.runtime"

local rep, sub = string.rep, string.sub
local concat, sort = table.concat, table.sort
local getinfo = debug.getinfo

local _M = {}

local HEADER = { "METHOD", "PATH", "MODE", "DEPS", "HANDLER" }

-- "file:line" where fn is defined.
local function where(fn)
  local info = getinfo(fn, "S")
  if info.what == "C" then return "[C]" end
  local file = sub(info.source, 1, 1) == "@" and sub(info.source, 2) or info.short_src
  return file .. ":" .. info.linedefined
end

local function dep_names(...)
  local names = {}
  for name in pairs(deps.merge(...) or {}) do names[#names + 1] = name end
  if #names == 0 then return "-" end
  sort(names)
  return concat(names, ",")
end

function _M.rows(app, appdir)
  local rows = {}
  for _, r in ipairs(app.routes) do
    local mode = r.websocket and "websocket" or r.pooled and "pool" or "loop"
    rows[#rows + 1] = { r.methods, r.path, mode, dep_names(app.deps, r.opts.deps),
                        where(r.handler) }
  end
  for _, s in ipairs(app.statics) do
    local dir = s.dir
    if sub(dir, 1, 1) ~= "/" and appdir then dir = appdir .. "/" .. dir end
    rows[#rows + 1] = { "GET,HEAD", s.prefix .. "/{path:path}", "static", "-", dir }
  end
  return rows
end

-- rows with the routes moonlet adds itself (/openapi.json, /docs), from what
-- runtime.routes gives C: the entries that are neither the app's routes nor static files.
local function builtin_rows(app, rows, served)
  for i = #app.routes + 1, #served do
    local e = served[i]
    if not e.static_root then
      local what = e.path == app.openapi_path and "OpenAPI document" or "docs page"
      rows[#rows + 1] = { e.methods, e.path, "loop", "-", "(moonlet: " .. what .. ")" }
    end
  end
end

-- The rows as lines, each column as wide as its widest cell (the last one unpadded); a
-- cell longer than WIDEST sticks out of its column rather than widen it for every line.
local WIDEST = 48

local function format(rows)
  local widths = {}
  for _, row in ipairs(rows) do
    for c = 1, #row - 1 do
      if #row[c] <= WIDEST then widths[c] = math.max(widths[c] or 0, #row[c]) end
    end
  end
  local lines = {}
  for i, row in ipairs(rows) do
    local cells = {}
    for c = 1, #row - 1 do cells[c] = row[c] .. rep(" ", math.max(widths[c] - #row[c], 0) + 2) end
    cells[#row] = row[#row]
    lines[i] = concat(cells)
  end
  return lines
end

function _M.main(args)
  local dir = cli.dir_arg(args, "routes: expected one APPDIR (moonlet routes APPDIR)")
  if not dir then return 2 end
  local app, err = App.load_dir(dir)
  if not app then return cli.fail(err) end
  local ok, served = pcall(runtime.routes, app)   -- what serve would refuse, refused here
  if not ok then return cli.fail(tostring(served)) end
  local rows = _M.rows(app, dir)
  builtin_rows(app, rows, served)
  table.insert(rows, 1, HEADER)
  local out = format(rows)
  if #app.middleware > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "middleware, outermost first (not for websocket routes and static files):"
    for _, mw in ipairs(app.middleware) do out[#out + 1] = "  " .. where(mw) end
  end
  io.stdout:write(concat(out, "\n"), "\n")
  return 0
end

return _M
