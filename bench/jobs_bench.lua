-- bench/run.sh's jobs section (run by `moonlet test`, a worker already consuming queue
-- "bench" of bench/apps/jobs): enqueues BENCH_JOBS_N no-op jobs with jobs:enqueue_many
-- (1,000 a call), and waits until the queue's done counter (P.."stats") says all of them
-- were run and acknowledged. Prints "jobs N seconds S" (S from the first enqueue to the
-- last ack).
local moonlet = require "moonlet"

local N = tonumber(os.getenv("BENCH_JOBS_N")) or 100000
local url = assert(os.getenv("REDIS_URL"), "REDIS_URL")

describe("bench", function()
  it("jobs", function()
    local jobs = moonlet.jobs.queue("bench", { redis = url })
    local r = assert(moonlet.redis.connect(url))
    local before = tonumber(r:hget("moonlet:jobs:{bench}:stats", "done")) or 0
    local t0 = moonlet.now()
    local list = {}
    for i = 1, 1000 do list[i] = { "noop" } end
    for _ = 1, N / 1000 do assert(jobs:enqueue_many(list)) end
    local t_enq = moonlet.now() - t0
    local deadline = t0 + 300
    while true do
      local done = (tonumber(r:hget("moonlet:jobs:{bench}:stats", "done")) or 0) - before
      if done >= N then break end
      assert(moonlet.now() < deadline, "only " .. done .. " of " .. N .. " jobs done in 300 s")
      moonlet.sleep(0.005)
    end
    print(("jobs %d seconds %.3f enqueue_seconds %.3f"):format(N, moonlet.now() - t0, t_enq))
  end)
end)
