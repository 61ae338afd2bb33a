-- bench/run.sh's jobs section: the no-op task `moonlet worker bench/apps/jobs --queue bench`
-- runs (bench/jobs_bench.lua enqueues). REDIS_URL is the bench's throwaway redis-server.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "jobs bench" }
local jobs = moonlet.jobs.queue("bench", { redis = assert(os.getenv("REDIS_URL"), "REDIS_URL") })
jobs:task("noop", function() end)

return app
