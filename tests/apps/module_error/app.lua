-- app.lua loads fine; a module it requires does not: lib/syntax.lua (a syntax error) or,
-- with MODULE_ERROR=runtime, lib/runtime.lua (an error while the module runs).
local moonlet = require "moonlet"
require("lib." .. (os.getenv("MODULE_ERROR") or "syntax"))
local app = moonlet.app{}
app:get("/", function() return { ok = true } end)
return app
