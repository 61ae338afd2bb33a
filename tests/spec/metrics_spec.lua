-- Prometheus metrics (--metrics-port) through the real binary: exact counts by route
-- template after a known sequence of requests, histograms consistent with them, the
-- gauges while requests, pool jobs and database connections are held, watchdog stalls by
-- route, promtool's check of the real page, the listener's own answers, metrics off by
-- default, and the failures that stop a start.
local t = require "moonlet.testing"

local APP = "tests/apps/metrics"

-- A port free now (the listener is closed again before moonlet binds it).
local function free_port()
  local l = assert(t.listen(0))
  local port = l.port
  l:close()
  return port
end

-- The text format into { ['name{labels}'] = number }, labels as the page writes them.
local function parse(text)
  local m = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local name, labels, value = line:match("^([%w_:]+)(%b{}) (%S+)$")
      if not name then
        name, value = line:match("^([%w_:]+) (%S+)$")
        labels = ""
      end
      assert(name, "not a sample line: " .. line)
      m[name .. labels] = assert(tonumber(value), "not a number: " .. line)
    end
  end
  return m
end

local function scrape(port)
  local res = assert(t.request(port, "GET", "/metrics", { timeout = 5 }))
  assert.are.same(200, res.status)
  return parse(res.body), res
end

-- Scrapes until check(metrics) is true (a gauge moves when the server gets to it).
local function scrape_until(port, check, what)
  local m, res
  for _ = 1, 300 do
    m, res = scrape(port)
    if check(m) then return m, res end
    t.sleep(0.01)
  end
  error("metrics never showed " .. what)
end

local function start(args, app)
  local mport = free_port()
  local all = { "--metrics-port", tostring(mport), "--access-log", "off" }
  for _, a in ipairs(args or {}) do all[#all + 1] = a end
  return t.server{ app = app or APP, args = all }, mport
end

local function requests(m, route, method, code)
  return m[('moonlet_http_requests_total{route="%s",method="%s",code="%s"}'):format(route, method,
                                                                                   code)]
end

-- The sockets pid listens on (TCP, IPv4 and IPv6), from /proc.
local function listening_sockets(pid)
  local inodes = {}
  local ls = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  for ino in ls:read("*a"):gmatch("socket:%[(%d+)%]") do inodes[ino] = true end
  ls:close()
  local n = 0
  -- sl local remote st tx:rx tr:when retrnsmt uid timeout inode ...; st 0A is LISTEN
  local pat = "^%s*%d+:%s+%S+%s+%S+%s+(%x%x)" .. ("%s+%S+"):rep(5) .. "%s+(%d+)"
  for _, f in ipairs({ "/proc/net/tcp", "/proc/net/tcp6" }) do
    for line in (t.read_file(f) or ""):gmatch("[^\n]+") do
      local st, ino = line:match(pat)
      if st == "0A" and inodes[ino] then n = n + 1 end
    end
  end
  return n
end

describe("metrics", function()
  it("counts requests by route template, method and status class, exactly", function()
    local srv, mport = start()
    local seq = {
      { "GET", "/items/1", 200 }, { "GET", "/items/2", 200 }, { "POST", "/items/3", 201 },
      { "GET", "/missing", 404 }, { "GET", "/boom", 500 }, { "GET", "/no/such/route", 404 },
      { "DELETE", "/items/4", 405 }, { "GET", "/pooled/a", 200 }, { "GET", "/pooled/b", 200 },
    }
    for _, r in ipairs(seq) do
      assert.are.same(r[3], assert(srv:request(r[1], r[2], { timeout = 5 })).status)
    end
    local m = scrape(mport)
    assert.are.same(2, requests(m, "/items/{id:int}", "GET", "2xx"))
    assert.are.same(1, requests(m, "/items/{id:int}", "POST", "2xx"))
    assert.are.same(1, requests(m, "/missing", "GET", "4xx"))
    assert.are.same(1, requests(m, "/boom", "GET", "5xx"))
    assert.are.same(2, requests(m, "/pooled/{name}", "GET", "2xx"))
    -- no route took them: the 404 and the 405 (the path exists, not the method)
    assert.are.same(1, requests(m, "(no route)", "GET", "4xx"))
    assert.are.same(1, requests(m, "(no route)", "DELETE", "4xx"))
    local total = 0
    for k, v in pairs(m) do
      assert.is_falsy(k:find("/items/1", 1, true))   -- templates, never raw paths
      if k:find("^moonlet_http_requests_total{") then total = total + v end
    end
    assert.are.same(#seq, total)
    srv:stop()
  end)

  it("histograms: cumulative buckets, +Inf = _count = the route's requests, _sum in range",
     function()
    local srv, mport = start()
    for i = 1, 5 do assert.are.same(200, srv:request("GET", "/items/" .. i).status) end
    assert.are.same(200, srv:request("GET", "/sleep?s=0.3", { timeout = 5 }).status)
    local m = scrape(mport)
    local bounds = { "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                     "1", "2.5", "5", "10", "+Inf" }
    for route, n in pairs({ ["/items/{id:int}"] = 5, ["/sleep"] = 1 }) do
      local name = 'moonlet_http_request_duration_seconds'
      local prev = 0
      for _, le in ipairs(bounds) do
        local v = m[('%s_bucket{route="%s",le="%s"}'):format(name, route, le)]
        assert.is_true(v >= prev, route .. " le=" .. le)
        prev = v
      end
      assert.are.same(n, prev)
      assert.are.same(n, m[('%s_count{route="%s"}'):format(name, route)])
      local sum = m[('%s_sum{route="%s"}'):format(name, route)]
      assert.is_true(sum > 0 and sum < n * 10, route .. " sum " .. sum)
    end
    -- the sleep took 0.3 s: above 0.25, within 0.5
    assert.are.same(0, m['moonlet_http_request_duration_seconds_bucket{route="/sleep",le="0.25"}'])
    assert.are.same(1, m['moonlet_http_request_duration_seconds_bucket{route="/sleep",le="0.5"}'])
    assert.is_true(m['moonlet_http_request_duration_seconds_sum{route="/sleep"}'] >= 0.3)
    srv:stop()
  end)

  it("in-flight requests and open connections while a request sleeps", function()
    local srv, mport = start()
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    local m = scrape_until(mport, function(x) return x.moonlet_http_requests_in_flight == 1 end,
                           "a request in flight")
    assert.are.same(1, m.moonlet_http_connections)
    assert.are.same(200, c:read_response(5).status)
    m = scrape_until(mport, function(x) return x.moonlet_http_requests_in_flight == 0 end,
                     "the request done")
    assert.are.same(1, m.moonlet_http_connections)   -- kept alive
    c:close()
    scrape_until(mport, function(x) return x.moonlet_http_connections == 0 end, "no connection")
    srv:stop()
  end)

  -- Two requests at once for a resource there is one of: the first holds it (the `busy`
  -- gauge at 1), the second waits (`waiting` at 1); both answered, both gauges back to 0.
  local function one_holds_one_waits(args, first, second, busy, waiting)
    local srv, mport = start(args)
    local m = scrape(mport)
    assert.are.same({ 0, 0 }, { m[busy], m[waiting] })
    local c1, c2 = assert(t.connect(srv.port)), assert(t.connect(srv.port))
    assert(c1:send("GET " .. first .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    scrape_until(mport, function(x) return x[busy] == 1 end, busy .. " 1")
    assert(c2:send("GET " .. second .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    m = scrape_until(mport, function(x) return x[waiting] == 1 end, waiting .. " 1")
    assert.are.same(1, m[busy])
    assert.are.same(200, c1:read_response(5).status)
    assert.are.same(200, c2:read_response(5).status)
    scrape_until(mport, function(x) return x[busy] == 0 and x[waiting] == 0 end, "both 0")
    c1:close()
    c2:close()
    srv:stop()
  end

  it("pool threads busy and the pool's queue (a pool of 1)", function()
    one_holds_one_waits({ "--pool-size", "1" }, "/pooled-sleep?s=1", "/pooled-sleep?s=0.1",
                        "moonlet_pool_threads_busy", "moonlet_pool_queue_length")
  end)

  it("executor threads busy and the executor's queue (an executor of 1)", function()
    one_holds_one_waits({ "--executor-size", "1" }, "/executor-sleep?s=1",
                        "/executor-sleep?s=0.1", "moonlet_executor_threads_busy",
                        "moonlet_executor_queue_length")
  end)

  it("database connections in use and statements waiting (SQLite, a pool of 1)", function()
    one_holds_one_waits({}, "/db/hold?s=0.8", "/db/hold?s=0.1",
                        "moonlet_db_connections_in_use", "moonlet_db_waiting")
  end)

  it("HTTP-client connections in use, then idle in the client's pool", function()
    local srv, mport = start()
    local url = ("http://127.0.0.1:%d/sleep?s=0.5"):format(srv.port)   -- its own /sleep
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /fetch?url=" .. url .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
    local m = scrape_until(mport, function(x)
      return x.moonlet_http_client_connections_in_use == 1
    end, "a client connection in use")
    assert.are.same(0, m.moonlet_http_client_connections_idle)
    assert.are.same({ status = 200 }, c:read_response(5):json())
    m = scrape_until(mport, function(x) return x.moonlet_http_client_connections_idle == 1 end,
                     "an idle client connection")
    assert.are.same(0, m.moonlet_http_client_connections_in_use)
    c:close()
    srv:stop()
  end)

  it("a reload keeps counting: a template seen again gets its series back", function()
    local dir = t.tmpdir()
    local code = [[
      local app = require("moonlet").app{}
      app:get("/a/{id}", function(req) return { id = req.params.id, v = %d } end)
      return app
    ]]
    t.write_file(dir .. "/app.lua", code:format(1))
    local srv, mport = start({ "--reload" }, dir)
    assert.are.same(1, srv:request("GET", "/a/x"):json().v)
    local mark = srv:mark()
    t.write_file(dir .. "/app.lua", code:format(2))
    srv:wait_log("reloaded", 10, mark)
    assert.are.same(2, srv:request("GET", "/a/y"):json().v)
    assert.are.same(2, requests(scrape(mport), "/a/{id}", "GET", "2xx"))
    srv:stop()
  end)

  it("a bounded number of series: past 512 templates, route=\"(other)\"", function()
    local dir = t.tmpdir()
    local lines = { 'local app = require("moonlet").app{}' }
    for i = 1, 515 do
      lines[#lines + 1] = ('app:get("/r%d/{id}", function() return "ok" end)'):format(i)
    end
    lines[#lines + 1] = "return app"
    t.write_file(dir .. "/app.lua", table.concat(lines, "\n"))
    local srv, mport = start({}, dir)
    local c = assert(t.connect(srv.port))
    for i = 1, 515 do
      assert(c:send(("GET /r%d/%d HTTP/1.1\r\nHost: x\r\n\r\n"):format(i, i)))
      assert.are.same(200, c:read_response(5).status)
    end
    c:close()
    local m = scrape(mport)
    local routes = 0
    for k in pairs(m) do
      if k:find('^moonlet_http_requests_total{route="/r%d+/{id}"') then routes = routes + 1 end
    end
    -- 512 series a process: "(no route)", "(other)" and the first 510 templates requested
    assert.are.same(510, routes)
    assert.are.same(5, requests(m, "(other)", "GET", "2xx"))
    assert.are.same(1, requests(m, "/r510/{id}", "GET", "2xx"))
    assert.is_nil(requests(m, "/r511/{id}", "GET", "2xx"))
    srv:stop()
  end)

  it("watchdog stalls by route, and the event loop's lag", function()
    local srv, mport = start({ "--block-warn", "100" })
    assert.are.same(200, srv:request("GET", "/block?s=0.3", { timeout = 5 }).status)
    local m = scrape_until(mport, function(x)
      return x['moonlet_watchdog_stalls_total{route="/block"}'] == 1
    end, "the stall of /block")
    assert.are.same(0, m['moonlet_watchdog_stalls_total{route="/items/{id:int}"}'] or 0)
    -- one turn of the loop ran the blocking handler: longer than 0.25 s
    assert.is_true(m['moonlet_event_loop_lag_seconds_bucket{le="0.25"}'] <
                   m['moonlet_event_loop_lag_seconds_bucket{le="+Inf"}'])
    assert.is_true(m.moonlet_event_loop_lag_seconds_sum >= 0.3)
    srv:stop()
  end)

  it("process metrics for the worker, and promtool check metrics on the real page", function()
    local srv, mport = start()
    assert.are.same(200, srv:request("GET", "/items/7").status)
    assert.are.same(500, srv:request("GET", "/boom").status)
    local m, res = scrape(mport)
    assert.are.same("text/plain; version=0.0.4; charset=utf-8", res.headers["content-type"])
    local rss = m['process_resident_memory_bytes{worker="0"}']
    assert.is_true(rss > 1e6 and math.abs(rss / 1024 - srv:rss_kb()) < 20 * 1024)
    assert.is_true(m['process_open_fds{worker="0"}'] >= 3)
    assert.is_true(m['process_cpu_seconds_total{worker="0"}'] >= 0)
    assert.is_true(math.abs(m['process_start_time_seconds{worker="0"}'] - os.time()) < 120)
    local r = t.run({ "check", "metrics" }, { bin = "promtool", stdin = res.body })
    assert.are.same("", r.stdout .. r.stderr)
    assert.are.same(0, r.status)
    srv:stop()
  end)

  it("the metrics port: 404 for another path, 405 for another method, 400 for garbage",
     function()
    local srv, mport = start()
    assert.are.same(404, t.request(mport, "GET", "/").status)
    assert.are.same(404, t.request(mport, "GET", "/metricsx").status)
    local res = t.request(mport, "POST", "/metrics")
    assert.are.same(405, res.status)
    assert.are.same("GET, HEAD", res.headers["allow"])
    assert.are.same(200, t.request(mport, "GET", "/metrics?x=1").status)
    local head = t.request(mport, "HEAD", "/metrics")
    assert.are.same(200, head.status)
    local c = assert(t.connect(mport))
    assert(c:send("NOT AN HTTP REQUEST\r\n\r\n"))
    assert.are.same(400, c:read_response(5).status)
    assert.is_true(c:is_closed(5))
    c:close()
    -- the scrapes were not the app's traffic
    local m = scrape(mport)
    assert.is_nil(requests(m, "(no route)", "GET", "4xx"))
    srv:stop()
  end)

  it("is off by default: no second listening socket", function()
    local off = t.server{ app = APP }
    assert.are.same(1, listening_sockets(off.pid))
    off:stop()
    assert.is_falsy(off:stderr():find("metrics on", 1, true))
    local on = start()
    assert.are.same(2, listening_sockets(on.pid))
    on:stop()
    assert.is_truthy(on:stderr():find("metrics on http://127.0.0.1:%d+/metrics"))
  end)

  it("a metrics port in use fails the start with a clear message", function()
    local l = assert(t.listen(0))
    local r = t.run({ "serve", APP, "--port", "0", "--metrics-port", tostring(l.port) })
    l:close()
    assert.are.same(2, r.status)
    assert.is_truthy(r.stderr:find(("metrics (--metrics-port): cannot listen on 127.0.0.1:%d: "
                                    .. "address already in use"):format(l.port), 1, true))
  end)

  it("the supervisor's hand-off: a worker records into the slot MOONLET_METRICS_* name",
     function()
    -- the spec runner is the supervisor here: moonlet's own functions, through the FFI
    local ffi = require "ffi"
    pcall(ffi.cdef, [[
      typedef struct { char *data; size_t len; size_t cap; } ml_spec_buf_t;
      int ml_metrics_region_create(int nslots, char *err, size_t errlen);
      void ml_metrics_render(ml_spec_buf_t *b);
      void ml_metrics_slot_gone(int slot);
      int fcntl(int fd, int cmd, ...);
      void free(void *p);
    ]])
    local C = ffi.C
    local function render()
      local b = ffi.new("ml_spec_buf_t")
      C.ml_metrics_render(b)
      local text = ffi.string(b.data, b.len)
      C.free(b.data)
      return parse(text)
    end
    local err = ffi.new("char[256]")
    local fd = C.ml_metrics_region_create(3, err, 256)
    assert(fd >= 0, ffi.string(err))
    local F_SETFD, FD_CLOEXEC = 2, 1
    C.fcntl(fd, F_SETFD, ffi.new("int", 0))   -- the worker inherits it
    local srv = t.server{ app = APP, args = { "--metrics-port", tostring(free_port()) },
                          env = { MOONLET_METRICS_FD = tostring(fd), MOONLET_METRICS_SLOT = "2" } }
    C.fcntl(fd, F_SETFD, ffi.new("int", FD_CLOEXEC))
    assert.are.same(1, listening_sockets(srv.pid))   -- the supervisor serves, not a worker
    assert.are.same(200, srv:request("GET", "/items/1").status)
    assert.are.same(200, srv:request("GET", "/items/2").status)
    local c = assert(t.connect(srv.port))
    assert(c:send("GET /sleep?s=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    local m
    for _ = 1, 300 do
      m = render()
      if m.moonlet_http_requests_in_flight == 1 then break end
      t.sleep(0.01)
    end
    assert.are.same(1, m.moonlet_http_requests_in_flight)
    assert.are.same(2, requests(m, "/items/{id:int}", "GET", "2xx"))
    assert.is_true(m['process_resident_memory_bytes{worker="2"}'] > 1e6)
    assert.is_nil(m['process_resident_memory_bytes{worker="0"}'])
    srv:kill()   -- gone while a request is in flight: its gauges go, its counters stay
    c:close()
    assert.are.same(1, render().moonlet_http_requests_in_flight)   -- what it left behind
    C.ml_metrics_slot_gone(2)
    m = render()
    assert.are.same(0, m.moonlet_http_requests_in_flight)
    assert.are.same(0, m.moonlet_http_connections)
    assert.are.same(2, requests(m, "/items/{id:int}", "GET", "2xx"))
    assert.is_nil(m['process_resident_memory_bytes{worker="2"}'])
  end)

  it("a worker whose MOONLET_METRICS_FD is no metrics region exits 2, saying so", function()
    local r = t.run({ "serve", APP, "--port", "0" },
                    { env = { MOONLET_METRICS_FD = "0", MOONLET_METRICS_SLOT = "0" } })
    assert.are.same(2, r.status)
    assert.is_truthy(r.stderr:find("metrics: descriptor 0 is not a", 1, true) or
                     r.stderr:find("shared memory: descriptor 0 is not a region", 1, true))
  end)
end)

describe("--metrics-port with --workers", function()
  -- the worker processes of the supervisor pid
  local function workers(pid)
    local out, p = {}, io.popen("ps -o pid= --ppid " .. pid)
    for line in p:lines() do out[#out + 1] = tonumber(line:match("%d+")) end
    p:close()
    return out
  end

  local function process_series(m)
    local n = 0
    for k in pairs(m) do if k:find("^process_resident_memory_bytes{") then n = n + 1 end end
    return n
  end

  it("the supervisor sums its workers' slots, through kills and reloads", function()
    local srv, mport = start({ "--workers", "2" })
    for i = 1, 40 do   -- new connections: the kernel spreads them over both workers
      assert.are.same(200, t.request(srv.port, "GET", "/items/" .. i).status)
    end
    -- a worker counts a request once its response is written: the last count may land in
    -- its slot just after the client read the response
    local m, res = scrape_until(mport, function(x)
      return requests(x, "/items/{id:int}", "GET", "2xx") == 40
    end, "40 requests")
    assert.are.same(40, requests(m, "/items/{id:int}", "GET", "2xx"))
    assert.are.same(40, m['moonlet_http_request_duration_seconds_count{route="/items/{id:int}"}'])
    assert.are.same(2, process_series(m))   -- one per live worker
    local r = t.run({ "check", "metrics" }, { bin = "promtool", stdin = res.body })
    assert.are.same(0, r.status, r.stdout .. r.stderr)

    -- a request held on one worker, then every worker killed: their gauges go, counts stay
    local conn = assert(t.connect(srv.port))
    assert(conn:send("GET /sleep?s=30 HTTP/1.1\r\nHost: x\r\n\r\n"))
    scrape_until(mport, function(x) return x.moonlet_http_requests_in_flight == 1 end,
                 "the held request in flight")
    for _, pid in ipairs(workers(srv.pid)) do os.execute("kill -9 " .. pid) end
    m = scrape_until(mport, function(x)
      return x.moonlet_http_requests_in_flight == 0 and x.moonlet_http_connections == 0
    end, "no gauge left by the killed workers")
    assert.are.same(40, requests(m, "/items/{id:int}", "GET", "2xx"))
    conn:close()

    -- the restarted workers, then a reload's new generation (other slots), count on
    srv:wait_log("restarting", 5)
    for i = 1, 5 do
      local res2 = t.request(srv.port, "GET", "/items/" .. i, { timeout = 5 })
      assert.are.same(200, res2 and res2.status)
    end
    srv:signal("HUP")
    srv:wait_log("reload: generation 2 ready", 10)
    for i = 1, 5 do assert.are.same(200, t.request(srv.port, "GET", "/items/" .. i).status) end
    m = scrape_until(mport, function(x)
      return process_series(x) == 2 and requests(x, "/items/{id:int}", "GET", "2xx") == 50
    end, "the old generation gone and 50 requests")
    assert.are.same(50, requests(m, "/items/{id:int}", "GET", "2xx"))
    -- the supervisor closes its metrics listener when it stops
    assert.are.same(0, srv:stop())
    assert.is_nil(t.request(mport, "GET", "/metrics", { timeout = 1 }))
  end)
end)
