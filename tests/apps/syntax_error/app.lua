local moonlet = require "moonlet"
local app = moonlet.app{}
app:get("/x", function()
  return 1
end
return app
