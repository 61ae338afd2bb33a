-- moonlet.redis against a throwaway redis-server (tests/support/redis.lua), through
-- tests/apps/redis served by the real binary: coroutine routes and their pooled twins.
local t = require "moonlet.testing"
local cjson = require "cjson"

-- A query parameter's value, percent-encoded.
local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function post(srv, path, body)
  local res = assert(t.request(srv.port, "POST", path, { body = cjson.encode(body) }))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

local function get(srv, path)
  local res = assert(t.request(srv.port, "GET", path))
  assert.are.same(200, res.status, res.body)
  return res:json()
end

-- Waits until redis-cli sees key (a route sets sub:ready:<ch> once subscribed).
local function wait_key(rs, key)
  local deadline = t.now() + 5
  while t.now() < deadline do
    if rs:cli("EXISTS", key):match("1") then return end
    t.sleep(0.02)
  end
  error("timed out waiting for " .. key)
end

local function clients(rs)
  return tonumber(rs:cli("INFO", "clients"):match("connected_clients:(%d+)"))
end

describe("redis", function()
  local rs, srv
  lazy_setup(function()
    rs = require("tests.support.redis").start()
    srv = t.server{ app = "tests/apps/redis", args = { "--pool-size", "4" },
                    env = { REDIS_URL = rs.url } }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if rs then rs:stop() end
  end)

  for _, prefix in ipairs({ "", "/pool" }) do
    local mode = prefix == "" and "coroutine route" or "pooled route"

    it("calls commands and converts replies (" .. mode .. ")", function()
      local k = "calls" .. prefix
      assert.are.same({ res = "OK" }, post(srv, prefix .. "/call", { "SET", k, "v" }))
      assert.are.same({ res = "v" }, post(srv, prefix .. "/call", { "GET", k }))
      assert.are.same({ res = 1 }, post(srv, prefix .. "/call", { "DEL", k }))
      assert.are.same({ res = t.null }, post(srv, prefix .. "/call", { "GET", k }))
      assert.are.same({ res = { "a", "b" } }, post(srv, prefix .. "/call", { "RPUSH", k, "a", "b" })
                      and post(srv, prefix .. "/call", { "LRANGE", k, 0, -1 }))
      assert.are.same({ res = "PONG" }, post(srv, prefix .. "/call", { "PING" }))
      assert.are.same({ err = "WRONGTYPE Operation against a key holding the wrong kind of value" },
                      post(srv, prefix .. "/call", { "INCR", k }))
      assert.matches("^ERR unknown command", post(srv, prefix .. "/call", { "NOSUCHCMD" }).err)
      -- binary-safe values, integer arguments written whole
      assert.are.same({ res = "OK" }, post(srv, prefix .. "/call", { "SET", k .. "b", "a\0b\r\n" }))
      assert.are.same({ res = "a\0b\r\n" }, post(srv, prefix .. "/call", { "GET", k .. "b" }))
      assert.are.same({ res = 1e15 }, post(srv, prefix .. "/call", { "INCRBY", k .. "n", 1e15 }))
      assert.are.same("1000000000000000", rs:cli("GET", k .. "n"):match("%d+"))
    end)

    it("has shortcuts for the common commands (" .. mode .. ")", function()
      local k = prefix == "" and "co" or "pool"
      local out = get(srv, prefix .. "/shortcuts?k=" .. k)
      assert.are.same({
        set = "OK", get = "v", missing = true, incr = 1, incrby = 11, expire = 1, ttl = 100,
        exists = 2, mset = "OK", mget = { "1", "2.5", t.null }, hset = 2, hget = "x",
        hincrby = 10, hgetall = { f1 = "x", f2 = "10" }, hdel = 1, rpush = 3, lpush = 4,
        lrange = { "z", "a", "b", "c" }, lpop = "z", rpop = "c", llen = 2, sadd = 2,
        sismember = 1, srem = 1, smembers = { "m2" }, zadd = 2,
        zrange = { "one", "1", "two", "2" }, zrem = 1, del = 2, publish = 0,
        big = 9007199254740000,
        wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value",
      }, out)
    end)

    it("pipelines commands, errors in place (" .. mode .. ")", function()
      local k = "pipe" .. prefix
      assert.are.same({ res = { "OK", 6, { err = "WRONGTYPE Operation against a key holding the wrong kind of value" },
                                { "6", t.null }, "OK", "OK", "QUEUED", "QUEUED", { 7, 8 } } },
                      post(srv, prefix .. "/pipeline", {
                        { "SET", k, 5 }, { "INCR", k }, { "LPUSH", k, 1 }, { "MGET", k, k .. "none" },
                        { "SET", k .. "tx", 6 }, { "MULTI" }, { "INCR", k .. "tx" }, { "INCR", k .. "tx" },
                        { "EXEC" },
                      }))
      assert.are.same({ res = {} }, post(srv, prefix .. "/pipeline", {}))
    end)

    it("selects the db, authenticates, and reports failures as nil, err (" .. mode .. ")", function()
      assert.are.same({ res = "OK" }, post(srv, prefix .. "/call?url=" .. enc(rs.url .. "/3"),
                                          { "SET", "in3", "x" }))
      assert.are.same("x", rs:cli("-n", 3, "GET", "in3"):match("%S+"))
      assert.are.same({ res = t.null }, post(srv, prefix .. "/call", { "GET", "in3" }))
      local port = t.free_port()
      assert.are.same({ err = "redis: connection refused" },
                      get(srv, prefix .. "/connect?url=" .. enc("redis://127.0.0.1:" .. port)))
      local err = get(srv, prefix .. "/connect?url=" .. enc("redis://:wrong@127.0.0.1:" .. rs.port)).err
      assert.matches("^ERR", err)   -- AUTH without a password set on the server
    end)
  end

  for _, prefix in ipairs({ "", "/pool" }) do
    it("works under moonlet.timeout, moonlet.gather and moonlet.spawn; misuse raises ("
       .. (prefix == "" and "coroutine route" or "pooled route") .. ")", function()
      rs:cli("DEL", "prim:n")
      local out = get(srv, prefix .. "/primitives")
      assert.are.same({ true, "timeout" }, out.blpop)
      assert.are.same("kept", out.kept)
      assert.are.same({ true, "timeout" }, out.stalled)
      assert.are.same("after", out.next)
      assert.are.same({ 1, 50, 50 }, out.gather)
      assert.are.same({ true, "closed" }, out.closed)
      assert.are.same({ true, "closed" }, out.after)
      assert.matches("SUBSCRIBE is not for r:call: use r:subscribe", out.raises[1])
      assert.matches("bad argument #3 to redis command %(expected a string or a number, got table%)",
                     out.raises[2])
      assert.matches("the redis client is closed", out.raises[3])
      assert.matches("BLPOP is not for a pipeline: it would hold the shared connection", out.raises[4])
      assert.matches("SUBSCRIBE is not for a pipeline: use r:subscribe", out.raises[5])
      assert.are.same("after", out.open)
    end)
  end

  it("password: connects with it, fails without it or with a wrong one", function()
    local secure = require("tests.support.redis").start{ password = "s3cr:et" }
    local ok, e = pcall(function()
      local u = "redis://:" .. "s3cr%3Aet" .. "@127.0.0.1:" .. secure.port
      assert.are.same({ ok = true }, get(srv, "/connect?url=" .. enc(u)))
      assert.are.same({ ok = true }, get(srv, "/pool/connect?url=" .. enc(u)))
      assert.are.same({ ok = true }, get(srv, "/connect?url=" .. enc(
        "redis://default:s3cr%3Aet@127.0.0.1:" .. secure.port)))   -- the ACL form
      assert.matches("^NOAUTH", get(srv, "/connect?url=" .. enc(
        "redis://127.0.0.1:" .. secure.port)).err)
      assert.matches("^WRONGPASS", get(srv, "/connect?url=" .. enc(
        "redis://:nope@127.0.0.1:" .. secure.port)).err)
    end)
    secure:stop()
    assert(ok, e)
  end)

  it("times out a command that gets no answer (timeout= in the URL)", function()
    -- a listener that never accepts: the kernel completes the handshake, nobody answers
    local l = assert(t.listen(0))
    local t0 = t.now()
    local res = get(srv, "/connect?url=" .. enc("redis://127.0.0.1:" .. l.port .. "?timeout=0.3"))
    local took = t.now() - t0
    l:close()
    assert.are.same({ err = "redis: timeout" }, res)
    assert.is_true(took >= 0.25 and took < 5, "took " .. took .. " s")
  end)

  it("times out a connect that never completes (connect_timeout= in the URL)", function()
    local full = t.spawn({ "tests/support/full_backlog.py", "20" }, { bin = "python3" })
    local deadline, port = t.now() + 10
    repeat
      port = full:stdout():match("(%d+)")
      if not port then t.sleep(0.05) end
    until port or t.now() > deadline or full:poll()
    assert(port, "full_backlog.py printed no port: " .. full:stderr())
    local t0 = t.now()
    local res = get(srv, "/connect?url=" .. enc("redis://127.0.0.1:" .. port .. "?connect_timeout=0.3"))
    local took = t.now() - t0
    full:stop(1)
    assert.are.same({ err = "redis: connect timeout" }, res)
    assert.is_true(took >= 0.25 and took < 5, "took " .. took .. " s")
  end)

  it("serves many concurrent requests on one shared connection", function()
    local before = clients(rs)
    local body = cjson.encode({ "INCR", "concurrent" })
    local raw = "POST /call HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
    local r = t.concurrent(srv.port, 200, raw, 20)
    assert.are.same(200, r.ok)
    assert.are.same("200", rs:cli("GET", "concurrent"):match("%d+"))
    assert.is_true(clients(rs) <= before + 1, "more connections than the shared one")
  end)

  it("fans a message out to 100 SSE subscribers, and every subscription ends when they leave", function()
    local numsub = function() return rs:cli("PUBSUB", "NUMSUB", "fan"):match("\n(%d+)") end
    local fds = srv:fd_count()
    local conns = {}
    for i = 1, 100 do
      conns[i] = t.connect(srv.port)
      conns[i]:send("GET /sse?ch=fan HTTP/1.1\r\nHost: x\r\n\r\n")
    end
    local deadline = t.now() + 10
    while numsub() ~= "100" and t.now() < deadline do t.sleep(0.05) end
    assert.are.same("100", numsub())
    assert.are.same("100", rs:cli("PUBLISH", "fan", "to all"):match("%d+"))
    local got = 0
    for _, c in ipairs(conns) do
      local data = ""
      deadline = t.now() + 5
      while not data:find("data: to all", 1, true) and t.now() < deadline do
        data = data .. (c:recv(1) or "")
      end
      if data:find("data: to all", 1, true) then got = got + 1 end
      c:close()
    end
    assert.are.same(100, got)
    deadline = t.now() + 5
    while (numsub() ~= "0" or srv:fd_count() > fds + 1) and t.now() < deadline do t.sleep(0.05) end
    assert.are.same("0", numsub())
    assert.is_true(srv:fd_count() <= fds + 1, "fds: " .. srv:fd_count() .. " > " .. fds .. " + 1")
  end)

  for _, prefix in ipairs({ "", "/pool" }) do
    local mode = prefix == "" and "coroutine route" or "pooled route"
    it("subscribes and receives messages from another connection and redis-cli (" .. mode .. ")", function()
      local ch = "news" .. prefix
      local c = t.connect(srv.port)
      c:send("GET " .. prefix .. "/sub?ch=" .. ch .. "&n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
      wait_key(rs, "sub:ready:" .. ch)
      assert.are.same({ res = 1 }, post(srv, "/call", { "PUBLISH", ch, "one" }))
      assert.are.same("1", rs:cli("PUBLISH", ch, "two"):match("%d+"))
      assert.are.same("1", rs:cli("PUBLISH", ch, "three\nlines"):match("%d+"))
      local res = assert(c:read_response(10))
      c:close()
      assert.are.same({ msgs = { { channel = ch, data = "one" }, { channel = ch, data = "two" },
                                 { channel = ch, data = "three\nlines" } } }, res:json())
      assert.are.same("0", rs:cli("PUBSUB", "NUMSUB", ch):match("\n(%d+)"))
    end)
  end

  it("psubscribes: pattern, channel and data", function()
    local c = t.connect(srv.port)
    c:send("GET /sub?ch=ev.*&pattern=1&n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_key(rs, "sub:ready:ev.*")
    rs:cli("PUBLISH", "ev.a", "1")
    rs:cli("PUBLISH", "other", "x")
    rs:cli("PUBLISH", "ev.b", "2")
    local res = assert(c:read_response(10))
    c:close()
    assert.are.same({ msgs = { { pattern = "ev.*", channel = "ev.a", data = "1" },
                               { pattern = "ev.*", channel = "ev.b", data = "2" } } }, res:json())
  end)

  it("ends the subscription of an SSE client that leaves", function()
    local c = t.connect(srv.port)
    c:send("GET /sse?ch=live HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_key(rs, "sub:ready:live")
    rs:cli("PUBLISH", "live", "hello")
    local got = ""
    local deadline = t.now() + 5
    while not got:find("data: hello") and t.now() < deadline do
      got = got .. (c:recv(1) or "")
    end
    assert.matches("data: hello", got)
    c:close()
    deadline = t.now() + 5
    while rs:cli("PUBSUB", "NUMSUB", "live"):match("\n(%d+)") ~= "0" and t.now() < deadline do
      t.sleep(0.05)
    end
    assert.are.same("0", rs:cli("PUBSUB", "NUMSUB", "live"):match("\n(%d+)"))
  end)

  it("blocks on BLPOP without blocking others, and cancels it when the client leaves", function()
    local key = "q"
    -- one BLPOP answered by a push from another request
    local c = t.connect(srv.port)
    c:send("GET /blpop?key=" .. key .. "&t=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    assert.are.same({ res = "PONG" }, post(srv, "/call", { "PING" }))   -- the loop is free
    assert.are.same({ res = 1 }, post(srv, "/call", { "RPUSH", key, "job" }))
    local res = assert(c:read_response(10))
    c:close()
    assert.are.same({ res = { key, "job" } }, res:json())
    -- clients that leave while BLPOP waits: their connections go, nothing leaks
    local fds, conns = srv:fd_count(), clients(rs)
    for _ = 1, 20 do
      local cc = t.connect(srv.port)
      cc:send("GET /blpop?key=" .. key .. "&t=0 HTTP/1.1\r\nHost: x\r\n\r\n")
      t.sleep(0.02)
      cc:reset()
    end
    local deadline = t.now() + 5
    while (clients(rs) > conns or srv:fd_count() > fds) and t.now() < deadline do t.sleep(0.05) end
    assert.is_true(clients(rs) <= conns, "BLPOP connections left: " .. clients(rs) .. " > " .. conns)
    assert.is_true(srv:fd_count() <= fds, "fds: " .. srv:fd_count() .. " > " .. fds)
    -- and the next push is not eaten by a cancelled BLPOP
    assert.are.same({ res = 1 }, post(srv, "/call", { "RPUSH", key, "kept" }))
    assert.are.same({ res = "kept" }, post(srv, "/call", { "LPOP", key }))
  end)

  it("BLPOP in a pooled route blocks its thread until a push or its timeout", function()
    local c = t.connect(srv.port)
    c:send("GET /pool/blpop?key=pq&t=5 HTTP/1.1\r\nHost: x\r\n\r\n")
    t.sleep(0.2)
    assert.are.same({ res = 1 }, post(srv, "/pool/call", { "RPUSH", "pq", "job" }))
    local res = assert(c:read_response(10))
    c:close()
    assert.are.same({ res = { "pq", "job" } }, res:json())
    assert.are.same({ res = t.null }, get(srv, "/pool/blpop?key=pq&t=0.2"))
  end)

  it("reconnects when the server cut its connections (coroutine and pooled routes)", function()
    assert.are.same({ res = "OK" }, post(srv, "/call", { "SET", "r", "1" }))
    for _ = 1, 4 do assert.are.same({ res = "1" }, post(srv, "/pool/call", { "GET", "r" })) end
    rs:cli("CLIENT", "KILL", "TYPE", "normal")
    t.sleep(0.1)
    -- the loop saw its connection end; a pool thread looks before it sends
    assert.are.same({ res = "1" }, post(srv, "/call", { "GET", "r" }))
    for _ = 1, 8 do assert.are.same({ res = "1" }, post(srv, "/pool/call", { "GET", "r" })) end
  end)
end)
