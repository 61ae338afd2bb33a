-- moonlet.jobs against a throwaway redis-server (tests/support/redis.lua): tests/apps/jobs
-- served by the real binary enqueues (coroutine and pooled routes), `moonlet worker`
-- processes run the tasks; what ran is counted in Redis by the tasks themselves.
local t = require "moonlet.testing"
local cjson = require "cjson"

describe("jobs", function()
  local rs, srv, w1

  local function post(path, body)
    local res = assert(t.request(srv.port, "POST", path, { body = cjson.encode(body) }))
    assert.are.same(200, res.status, res.body)
    return res:json()
  end
  local function get(path)
    local res = assert(t.request(srv.port, "GET", path))
    assert.are.same(200, res.status, res.body)
    return res:json()
  end
  local function enqueue(task, args, opts, queue, prefix)
    return post((prefix or "") .. "/enqueue", { task = task, args = args or {}, opts = opts, queue = queue })
  end
  -- A `moonlet worker` process on queue, ready once it logged its queue line.
  local function worker(queue, extra)
    local argv = { "worker", "tests/apps/jobs", "--queue", queue, "--concurrency", "20" }
    for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
    local p = t.spawn(argv, { env = { REDIS_URL = rs.url } })
    p:wait_log("worker: queue " .. queue, 10)
    return p
  end
  -- what the tasks counted in hash key for job id of queue q (default t)
  local function hget(key, id, q)
    return tonumber((rs:cli("HGET", key, (q or "t") .. "/" .. id):match("%d+")))
  end
  local function wait_for(what, fn, timeout)
    local deadline = t.now() + (timeout or 5)
    while t.now() < deadline do
      local v = fn()
      if v then return v end
      t.sleep(0.02)
    end
    error("timed out waiting for " .. what)
  end

  lazy_setup(function()
    rs = require("tests.support.redis").start()
    srv = t.server{ app = "tests/apps/jobs", args = { "--pool-size", "2", "--executor-size", "2" },
                    env = { REDIS_URL = rs.url } }
    w1 = worker("t")
  end)
  lazy_teardown(function()
    if w1 then w1:stop() end
    if srv then srv:stop() end
    if rs then rs:stop() end
  end)

  it("enqueue -> run -> result, from a coroutine and a pooled route", function()
    for _, prefix in ipairs({ "", "/pool" }) do
      local e = enqueue("add", { 2, 3 }, nil, nil, prefix)
      assert.are.same(prefix == "/pool", e.in_pool)
      assert.is_true(e.created)
      assert.are.same({ result = 5, err = t.null }, get("/result/" .. e.id))
      local st = get(prefix .. "/status/" .. e.id)
      assert.are.same("done", st.state)
      assert.are.same(1, st.info.attempts)
      assert.are.same("5", st.info.result)
    end
    -- the job table and the arguments, nulls and tables included
    local e = enqueue("echo", { "a", { x = 1 }, 3.5 })
    local res = get("/result/" .. e.id).result
    assert.are.same({ "a", { x = 1 }, 3.5 }, res.args)
    assert.are.same({ id = e.id, queue = "t", task = "echo", attempt = 1 }, res.job)
  end)

  it("runs a pool = true task on an executor thread", function()
    local e = enqueue("pooled", { 21 })
    assert.are.same({ in_pool = true, double = 42 }, get("/result/" .. e.id).result)
  end)

  it("refuses an argument that is not a JSON value, at enqueue", function()
    local r = post("/enqueue_bad", {})
    assert.is_false(r.ok)
    assert.matches("enqueue: argument #2 is not a JSON value %(cannot encode a function as JSON%)", r.err)
    assert.matches("tests/apps/jobs/app.lua", r.err, 1, true)   -- the caller's line
  end)

  it("retries with backoff, then moves the job to the dead letters with error and traceback", function()
    local mark = w1:mark()
    local c0 = get("/counts")
    local e = enqueue("flaky")
    local st = wait_for("dead", function()
      local s = get("/status/" .. e.id)
      return s.state == "dead" and s
    end)
    assert.are.same(3, st.info.attempts)                    -- retries = 2
    assert.are.same(3, hget("flaky", e.id))                 -- ran three times
    local c1 = get("/counts")
    assert.are.same({ 3, 2, 1, 0, 0, 0 }, { c1.failed - c0.failed, c1.retried - c0.retried,
                                            c1.dead - c0.dead, c1.scheduled, c1.running, c1.queued })
    assert.matches("boom on attempt 3", st.info.last_error, 1, true)
    assert.matches("stack traceback", st.info.traceback, 1, true)
    assert.matches("app.lua:%d+: in function", st.info.traceback)
    assert.matches("dead: tests/apps/jobs/app.lua:%d+: boom on attempt 3", get("/result/" .. e.id).err)
    local dead = rs:cli("XRANGE", "moonlet:jobs:{t}:dead", "-", "+")
    assert.matches(e.id, dead, 1, true)
    assert.matches("boom on attempt 3", dead, 1, true)
    -- one log line per failure, with the job id
    w1:wait_log("job " .. e.id .. " %(flaky%) failed, retry in 0.0s: .*boom on attempt 1", 2, mark)
    w1:wait_log("job " .. e.id .. " %(flaky%) is dead: .*boom on attempt 3", 2, mark)
    -- retry_dead: queued again from attempt 0, off the dead-letter stream
    assert.are.same({ ok = true, err = t.null }, post("/retry_dead/" .. e.id, {}))
    wait_for("dead again", function() return hget("flaky", e.id) == 6 and get("/status/" .. e.id).state == "dead" end)
    assert.are.same(3, get("/status/" .. e.id).info.attempts)
    assert.are.same({ ok = false, err = "not dead" }, post("/retry_dead/" .. enqueue("add", { 1, 1 }).id, {}))
  end)

  it("fails a run past its timeout (the coroutine is cancelled) and an unknown task", function()
    local e = enqueue("hang")
    local st = wait_for("dead", function() local s = get("/status/" .. e.id); return s.state == "dead" and s end)
    assert.matches("timeout: the run took more than 0.3s", st.info.last_error, 1, true)
    local u = enqueue("no_such_task")
    st = wait_for("dead", function() local s = get("/status/" .. u.id); return s.state == "dead" and s end)
    assert.matches("unknown task 'no_such_task'", st.info.last_error, 1, true)
  end)

  it("makes enqueueing idempotent with a caller's id", function()
    local a = enqueue("record", {}, { id = "welcome-42" })
    local b = enqueue("record", {}, { id = "welcome-42" })
    assert.are.same("welcome-42", a.id)
    assert.is_true(a.created)
    assert.is_false(b.created)
    assert.are.same({ result = "welcome-42", err = t.null }, get("/result/welcome-42"))
    enqueue("record", {}, { id = "welcome-42" })
    t.sleep(0.3)
    assert.are.same(1, hget("runs", "welcome-42"))
  end)

  it("runs a delayed job not before its delay; status queued -> running -> done", function()
    local e = enqueue("record", {}, { delay = 1 })
    assert.are.same("queued", get("/status/" .. e.id).state)
    t.sleep(0.5)
    assert.is_nil(hget("runs", e.id))
    assert.are.same(e.id, get("/result/" .. e.id).result)
    local info = get("/status/" .. e.id).info
    assert.is_true(tonumber(info.started_at) - tonumber(info.enqueued_at) >= 1000)
    -- a running job: seen running, and its result waited for
    local s = enqueue("slow", { 0.6 })
    wait_for("running", function() return get("/status/" .. s.id).state == "running" end)
    assert.are.same({ result = t.null, err = "timeout" }, get("/result/" .. s.id .. "?timeout=0.1"))
    assert.are.same({ result = "slept", err = t.null }, get("/result/" .. s.id .. "?timeout=3"))
    assert.are.same("done", get("/status/" .. s.id).state)
    assert.are.same({ state = t.null, info = t.null, err = "unknown job" }, get("/status/nope"))
  end)

  it("a worker killed with -9 mid-job: another finishes it exactly once after the timeout", function()
    local a = worker("k")
    local e = enqueue("slow", { 1.5 }, nil, "k")
    wait_for("started", function() return hget("started", e.id, "k") == 1 end)
    a:signal("KILL")
    assert.are.same(137, a:wait(5))
    local b = worker("k")
    local t0 = t.now()
    assert.are.same({ result = "slept", err = t.null }, get("/result/" .. e.id .. "?q=k&timeout=8"))
    assert.is_true(t.now() - t0 >= 1.0)   -- reclaimed once idle past the timeout (2 s + 0.5)
    assert.are.same(2, hget("started", e.id, "k"))
    assert.are.same(1, hget("finished", e.id, "k"))
    assert.are.same(2, get("/status/" .. e.id .. "?q=k").info.attempts)
    b:wait_log("reclaimed 1 job%(s%)", 1)
    b:stop()
  end)

  it("a job whose workers keep dying is dead once lost more often than its retries allow", function()
    local e = enqueue("slow", { 5 }, nil, "k")   -- timeout 2, retries 1
    for run = 1, 2 do
      local a = worker("k")
      wait_for("run " .. run, function() return hget("started", e.id, "k") == run end, 6)
      a:signal("KILL")
      a:wait(5)
    end
    local c = worker("k")
    local st = wait_for("dead", function()
      local s = get("/status/" .. e.id .. "?q=k")
      return s.state == "dead" and s
    end, 6)
    assert.matches("lost 2 time(s): the workers running it stopped", st.info.last_error, 1, true)
    assert.are.same(2, hget("started", e.id, "k"))   -- not run a third time
    c:stop()
  end)

  it("two workers share a queue and run no job twice", function()
    local a, b = worker("k"), worker("k")
    local n = 400
    local ids = post("/enqueue_many", { queue = "k", task = "record", n = n }).ids
    assert.are.same(n, #ids)
    local runs
    wait_for("every job run", function()
      runs = {}
      local lines, done = rs:cli("HGETALL", "runs"), 0
      for f, v in lines:gmatch("([^\n]+)\n([^\n]+)") do runs[f] = tonumber(v) end
      for _, id in ipairs(ids) do if runs["k/" .. id] then done = done + 1 end end
      return done == n
    end, 10)
    for _, id in ipairs(ids) do assert.are.same(1, runs["k/" .. id]) end
    a:stop()
    b:stop()
    -- both took jobs (each logs nothing per job: count the consumers in the group)
    local consumers = rs:cli("XINFO", "CONSUMERS", "moonlet:jobs:{k}:stream", "workers")
    assert.is_true(select(2, consumers:gsub("\n", "\n")) > 0)
  end)

  it("SIGTERM: stops taking jobs, finishes the running one, exits 0", function()
    local a = worker("k", { "--graceful-timeout", "5" })
    local e = enqueue("slow", { 0.8 }, nil, "k")
    wait_for("started", function() return hget("started", e.id, "k") == 1 end)
    local mark = a:mark()
    a:signal("TERM")
    assert.are.same(0, a:wait(5))
    assert.are.same(1, hget("finished", e.id, "k"))
    assert.are.same("done", get("/status/" .. e.id .. "?q=k").state)
    a:wait_log("worker: stopping, 1 job%(s%) running", 1, mark)
    a:wait_log("worker: every running job finished", 1, mark)
    -- a worker has no port: its stop says nothing of connections
    assert.matches(" shutting down\n", a:stderr(), 1, true)
    assert.is_nil(a:stderr():find("connection(s) open", 1, true))
  end)

  it("SIGTERM past --graceful-timeout leaves the job pending for another worker", function()
    local a = worker("k", { "--graceful-timeout", "0.3" })
    local e = enqueue("slow4", { 2.5 }, nil, "k")   -- a slow machine still stops long before
    wait_for("started", function() return hget("started", e.id, "k") == 1 end)
    a:signal("TERM")
    assert.are.same(0, a:wait(5))
    assert.is_nil(hget("finished", e.id, "k"))
    a:wait_log("1 job%(s%) left pending", 1)
    local b = worker("k")   -- reclaims it once idle past its timeout (4 s + 0.5)
    assert.are.same({ result = "slept", err = t.null }, get("/result/" .. e.id .. "?q=k&timeout=12"))
    assert.are.same(1, hget("finished", e.id, "k"))
    assert.are.same(2, hget("started", e.id, "k"))
    b:stop()
  end)

  it("every(): a periodic task runs once per period across two workers", function()
    local t0 = t.now()
    local a, b = worker("p"), worker("p")
    t.sleep(2.6)
    a:stop()
    b:stop()
    local elapsed = t.now() - t0
    local ticks = {}
    for id in rs:cli("LRANGE", "ticks", 0, -1):gmatch("[^\n]+") do
      assert.is_nil(ticks[id], id .. " ran twice")
      ticks[id] = true
    end
    local n = 0
    for id in pairs(ticks) do
      assert.matches("^every:tick:%d+$", id)
      n = n + 1
    end
    -- one a period slot (no id twice, above), so at most one a second of the window
    assert.is_true(n >= 2 and n <= math.ceil(elapsed) + 1, n .. " ticks in " .. elapsed .. " s")
  end)

  it("the metrics page has the job series (promtool checks it)", function()
    local mport = t.free_port()
    local a = worker("k", { "--metrics-port", tostring(mport) })
    local e = enqueue("record", {}, nil, "k")
    assert.are.same({ result = t.null, err = t.null }, get("/result/" .. e.id .. "?q=k"))
    local res = assert(t.request(mport, "GET", "/metrics"))
    assert.are.same(200, res.status)
    local m = {}
    for name, v in res.body:gmatch("\n([%w_]+{[^}]*}) (%S+)") do m[name] = tonumber(v) end
    assert.are.same(1, m['moonlet_jobs_done_total{queue="k"}'])
    assert.are.same(0, m['moonlet_jobs_running{queue="k"}'])
    assert.are.same(0, m['moonlet_jobs_dead_total{queue="k"}'])
    assert.is_number(m['moonlet_jobs_queue_length{queue="k"}'])
    assert.are.same(1, m['moonlet_jobs_duration_seconds_count{queue="k"}'])
    assert.matches("# TYPE moonlet_jobs_duration_seconds histogram", res.body, 1, true)
    local r = t.run({ "check", "metrics" }, { bin = "promtool", stdin = res.body })
    assert.are.same("", r.stdout .. r.stderr)
    assert.are.same(0, r.status)
    a:stop()
  end)

  it("serve --worker runs the tasks inside the web process", function()
    w1:stop()
    w1 = nil
    local s = t.server{ app = "tests/apps/jobs", args = { "--worker", "t" }, env = { REDIS_URL = rs.url } }
    local body = cjson.encode({ task = "add", args = { 20, 22 } })
    local res = assert(t.request(s.port, "POST", "/enqueue", { body = body }))
    local id = res:json().id
    res = assert(t.request(s.port, "GET", "/result/" .. id))
    assert.are.same({ result = 42, err = t.null }, res:json())
    s:wait_log("worker: queue t", 1)
    assert.are.same(0, s:signal("TERM") and s:wait(5))
  end)

  it("apps/todo: a todo given a due date gets a reminder job, logged by the worker", function()
    local dir = t.tmpdir()
    local here = assert(io.popen("pwd")):read("*l")
    local env = { REDIS_URL = rs.url, DATABASE_URL = false }
    local todo = t.server{ app = here .. "/apps/todo", cwd = dir, env = env }
    local wk = t.spawn({ "worker", here .. "/apps/todo", "--queue", "todo" }, { cwd = dir, env = env })
    wk:wait_log("worker: queue todo", 10)
    local due = os.time() + 1
    local res = assert(t.request(todo.port, "POST", "/todos", {
      headers = { ["content-type"] = "application/json" },
      body = cjson.encode({ title = "buy milk", due = due }) }))
    assert.are.same(201, res.status, res.body)
    assert.are.same({ id = 1, title = "buy milk", done = false, reminder = "todo-1-" .. due }, res:json())
    wk:wait_log('reminder: todo 1 "buy milk" is due', 5)
    -- not before its time (Redis's clock, in ms, against the due date in seconds)
    local started = rs:cli("HGET", "moonlet:jobs:{todo}:job:todo-1-" .. due, "started_at")
    assert.is_true(tonumber(started:match("%d+")) >= due * 1000)
    wk:stop()
    todo:stop()
  end)

  it("moonlet worker refuses a queue the app does not declare, and a missing --queue", function()
    local r = t.run({ "worker", "tests/apps/jobs", "--queue", "nope" }, { env = { REDIS_URL = rs.url } })
    assert.are.same(2, r.status)
    assert.matches("the app declares no queue 'nope'", r.stderr, 1, true)
    r = t.run({ "worker", "tests/apps/jobs" }, { env = { REDIS_URL = rs.url } })
    assert.are.same(2, r.status)
    assert.matches("no --queue NAME", r.stderr, 1, true)
  end)
end)
