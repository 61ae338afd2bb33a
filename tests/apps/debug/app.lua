-- Errors for tests/spec/debug_spec.lua (development mode's 500s: --debug, --reload), the
-- same routes for both kinds of route (/c: coroutine, /p: pooled). DEBUG_APP_MW=1 puts a
-- middleware around them (pooled routes then hop to the pool behind it); x-crash makes it
-- raise.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "debug" }

if os.getenv("DEBUG_APP_MW") == "1" then
  app:use(function(req, nxt)
    if req.headers["x-crash"] then error("middleware bug") end
    return nxt(req)
  end)
end

local function failing_dep()
  local cfg = nil
  return cfg.missing   -- a dependency's bug
end

for _, kind in ipairs{ "c", "p" } do
  local opts = { pool = kind == "p" }
  local function route(path, handler, extra)
    local o = { pool = opts.pool }
    for k, v in pairs(extra or {}) do o[k] = v end
    app:get("/" .. kind .. path, o, handler)
  end
  route("/ok", function() return { ok = true } end)
  route("/boom", function()
    local t = nil
    return t.field   -- attempt to index a nil value
  end)
  route("/script", function()
    error("<script>alert('x')</script> & \"quoted\"")
  end)
  route("/http-error", function() error(moonlet.http_error(404, "Item not found")) end)
  route("/dep", function(req) return { never = req.deps.broken } end,
        { deps = { broken = failing_dep } })
  route("/unserializable", function() return { f = print } end)   -- JSON cannot hold it
  -- a handler without parameters runs without req (built only for its error page); one
  -- that takes varargs gets req as its first
  route("/vararg", function(...)
    local req = ...
    return { path = req.path, n = select("#", ...) }
  end)
end

app:websocket("/ws", { deps = { broken = failing_dep } }, function(ws)
  ws:send("never")
end)

return app
