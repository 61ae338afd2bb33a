-- bench_redis (bench/run.sh): GET /get reads one key, GET /set writes it, through
-- moonlet.redis from coroutine routes. REDIS_URL is the throwaway server of the section.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "redis_getset" }
local r = assert(moonlet.redis.connect(assert(os.getenv("REDIS_URL"), "REDIS_URL")))

app:get("/get", function()
  local v = assert(r:get("bench:key"))
  return v == moonlet.null and "" or v
end)

app:get("/set", function()
  return assert(r:set("bench:key", "value"))
end)

return app
