-- moonlet.load_error: the app `moonlet serve --reload` serves while the real one does not
-- load (app.lua or a module it requires raises, or an on_startup hook fails): every
-- request, whatever its method and path, gets a 500 saying why, until a saved fix is
-- reloaded. Built by C (app.c's ml_app_failed) with the error as its one argument.
local moonlet = require "moonlet"

return function(message)
  local app = moonlet.app{ title = "app failed to load", openapi = false }
  local body = { detail = "app failed to load: " .. tostring(message),
                 hint = "fix the code and save: --reload loads it again" }
  -- a middleware runs for unrouted requests too (404s, 405s): it answers them all
  app:use(function() return { status = 500, body = body, headers = {} } end)
  return app
end
