-- bench/run.sh's jobs section, moonlet's side (run by `moonlet test`), on queue "bench" of
-- bench/apps/jobs (its no-op task), BENCH_JOBS_N jobs, REDIS_URL the bench's redis-server:
--   BENCH_JOBS_MODE=e2e      (a worker consumes already) enqueues the jobs with
--                            jobs:enqueue_many (1,000 a call) and waits until the queue's
--                            done counter says all of them ran and were acknowledged
--   BENCH_JOBS_MODE=enqueue  enqueues them only (no worker yet)
--   BENCH_JOBS_MODE=drain    started before the worker (it says "watching" on stderr),
--                            waits for it: timed from the first job it sees done to the last
-- Prints "jobs N seconds S" (e2e: from the first enqueue to the last ack).
local moonlet = require "moonlet"

local N = tonumber(os.getenv("BENCH_JOBS_N")) or 100000
local MODE = os.getenv("BENCH_JOBS_MODE") or "e2e"
local url = assert(os.getenv("REDIS_URL"), "REDIS_URL")
local STATS = "moonlet:jobs:{bench}:stats"

describe("bench", function()
  it("jobs " .. MODE, function()
    local jobs = moonlet.jobs.queue("bench", { redis = url })
    local r = assert(moonlet.redis.connect(url))
    local function done() return tonumber(r:hget(STATS, "done")) or 0 end
    local before = done()
    local t0 = moonlet.now()
    if MODE == "drain" then io.stderr:write("watching\n") end
    if MODE ~= "drain" then
      local list = {}
      for i = 1, 1000 do list[i] = { "noop" } end
      for _ = 1, N / 1000 do assert(jobs:enqueue_many(list)) end
      if MODE == "enqueue" then
        print(("enqueued %d seconds %.3f"):format(N, moonlet.now() - t0))
        return
      end
    end
    local first
    local deadline = moonlet.now() + 300
    while true do
      local d = done() - before
      if MODE == "drain" and not first and d > 0 then first, t0 = d, moonlet.now() end
      if d >= N then break end
      assert(moonlet.now() < deadline, "only " .. d .. " of " .. N .. " jobs done in 300 s")
      moonlet.sleep(0.002)
    end
    local n = MODE == "drain" and N - first or N
    print(("jobs %d seconds %.3f"):format(n, moonlet.now() - t0))
  end)
end)
