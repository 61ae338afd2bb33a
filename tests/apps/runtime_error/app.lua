local moonlet = require "moonlet"
local app = moonlet.app{}
local cfg = nil
print(cfg.port)
return app
