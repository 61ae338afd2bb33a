-- req.client and req.scheme, on the loop and in the pool (tests/spec/proxy_spec.lua).
local moonlet = require "moonlet"
local app = moonlet.app()

local function who(req) return { client = req.client, scheme = req.scheme } end
app:get("/who", who)
app:get("/pool/who", { pool = true }, who)

return app
