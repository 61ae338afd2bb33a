-- Job queues for tests/spec/jobs_spec.lua. REDIS_URL is the server (a throwaway one the
-- spec starts). Queue "t": the tasks; queue "p": a periodic task. Routes enqueue and read
-- status and results (each has a pooled twin under /pool).
local moonlet = require "moonlet"

local app = moonlet.app{ title = "jobs" }
local url = assert(os.getenv("REDIS_URL"), "REDIS_URL")
local jobs = moonlet.jobs.queue("t", { redis = url, result_ttl = 60 })

local function r() return assert(moonlet.redis.connect(url)) end

jobs:task("add", function(_, a, b) return a + b end)
jobs:task("echo", function(job, ...) return { job = job, args = { ... } } end)
-- fails every time: two retries, no wait between them
jobs:task("flaky", function(job)
  r():hincrby("flaky", job.queue .. "/" .. job.id, 1)
  error("boom on attempt " .. job.attempt)
end, { retries = 2, backoff = 0 })
-- records each run by job id (two workers must never both run one)
jobs:task("record", function(job)
  r():hincrby("runs", job.queue .. "/" .. job.id, 1)
  return job.id
end)
-- started and finished counts by job id, a sleep between (killed mid-job, drained)
local function slow(job, secs)
  r():hincrby("started", job.queue .. "/" .. job.id, 1)
  moonlet.sleep(secs)
  r():hincrby("finished", job.queue .. "/" .. job.id, 1)
  return "slept"
end
jobs:task("slow", slow, { timeout = 2, retries = 1 })
jobs:task("hang", function() moonlet.sleep(10) end, { timeout = 0.3, retries = 0 })
jobs:task("pooled", function(_, n)
  return { in_pool = moonlet.in_pool(), double = n * 2 }
end, { pool = true })

-- queue "k": the workers the spec starts, stops and kills
local k = moonlet.jobs.queue("k", { redis = url })
k:task("slow", slow, { timeout = 2, retries = 1 })
k:task("slow4", slow, { timeout = 4, retries = 1 })   -- outlives a short --graceful-timeout
k:task("record", function(job) r():hincrby("runs", job.queue .. "/" .. job.id, 1) end)

local periodic = moonlet.jobs.queue("p", { redis = url })
periodic:task("tick", function(job) r():rpush("ticks", job.id) end)
periodic:every(1, "tick")

local function both(method, path, handler)
  app[method](app, path, handler)
  app[method](app, "/pool" .. path, { pool = true }, handler)
end

-- POST /enqueue { "task": ..., "args": [...], "opts": {...} } -> { id, created }
both("post", "/enqueue", function(req)
  local b = req:json()
  local args = b.args or {}
  if b.opts then args[#args + 1] = b.opts end
  local q = b.queue == "k" and k or jobs
  local id, created = q:enqueue(b.task, unpack(args))
  if not id then return 502, { detail = created } end
  return { id = id, created = created, in_pool = moonlet.in_pool() }
end)

-- POST /enqueue_bad: a function as an argument -> the error's message
app:post("/enqueue_bad", function()
  local ok, err = pcall(function() local id = jobs:enqueue("add", function() end); return id end)
  return { ok = ok, err = tostring(err) }
end)

-- ?q=k: queue k, else t
local function queue(req) return req.query.q == "k" and k or jobs end

both("get", "/status/{id}", function(req)
  local state, info = queue(req):status(req.params.id)
  return { state = state or moonlet.null, info = type(info) == "table" and info or moonlet.null,
           err = type(info) == "string" and info or moonlet.null }
end)

both("get", "/result/{id}", function(req)
  local res, err = queue(req):result(req.params.id, tonumber(req.query.timeout or "5"))
  return { result = res == nil and moonlet.null or res, err = err or moonlet.null }
end)

app:post("/retry_dead/{id}", function(req)
  local ok, err = jobs:retry_dead(req.params.id)
  return { ok = ok or false, err = err or moonlet.null }
end)

-- POST /enqueue_many { "queue": "k", "task": ..., "n": N } -> the ids
app:post("/enqueue_many", function(req)
  local b = req:json()
  local list = {}
  for i = 1, b.n do list[i] = { b.task, i } end
  return { ids = assert((b.queue == "k" and k or jobs):enqueue_many(list)) }
end)

app:get("/counts", function() return assert(jobs:counts()) end)

return app
