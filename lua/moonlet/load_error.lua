-- moonlet.load_error: the app `moonlet serve --reload` serves while the real one does not
-- load (app.lua or a module it requires raises, or an on_startup hook fails): every
-- request, whatever its method and path, gets a 500 saying why (moonlet.error_page: an
-- HTML page for a browser, else {"detail": "app failed to load: ...", "traceback": []}),
-- until a saved fix is reloaded. Built by C (app.c's ml_app_failed) with the error.
local moonlet = require "moonlet"
local error_page = require "moonlet.error_page"

return function(message)
  local app = moonlet.app{ title = "app failed to load", openapi = false }
  local why = "app failed to load: " .. tostring(message)
  -- a middleware runs for unrouted requests too (404s, 405s): it answers them all
  app:use(function(req)
    local status, body, headers = error_page.for_request(req, why)
    return { status = status, body = body, headers = headers or {} }
  end)
  return app
end
