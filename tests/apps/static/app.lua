-- Static files (app:static) beside Lua routes and middleware; STATIC_EXTRA mounts a
-- directory the spec makes at run time (symlinks, a large file) at /extra.
local moonlet = require "moonlet"
local app = moonlet.app()

app:use(function(req, next)            -- never sees static files
  local res = next(req)
  res.headers["x-middleware"] = "ran"
  return res
end)

app:static("/static", "public", { max_age = 3600 })
app:static("/plain", "public", { index = false })
local extra = os.getenv("STATIC_EXTRA")
if extra then app:static("/extra", extra) end

local bad = os.getenv("STATIC_BAD")    -- load errors, for the spec
if bad == "missing" then app:static("/x", "no-such-dir") end
if bad == "file" then app:static("/x", "app.lua") end
if bad == "prefix" then app:static("/x/", "public") end
if bad == "option" then app:static("/x", "public", { maxage = 1 }) end
if bad == "twice" then app:static("/static", "public") end

app:get("/static/api", function() return { from = "lua" } end)   -- a route beats the mount
app:get("/hello", function() return { message = "hello" } end)

return app
