-- A route module found through APPDIR on package.path.
local _M = {}

function _M.install(app)
  app:get("/users/{name}", function(req)
    return { user = req.params.name }
  end)
end

return _M
