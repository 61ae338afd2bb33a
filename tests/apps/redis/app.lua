-- Redis routes for tests/spec/redis_spec.lua. REDIS_URL is the server (a throwaway one the
-- spec starts). Each route has a pooled twin under /pool.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "redis" }
local url = assert(os.getenv("REDIS_URL"), "REDIS_URL")

local function client(req)
  -- ?url= overrides (bad passwords, other dbs, closed ports); connecting again is cheap
  local r, err = moonlet.redis.connect(req.query.url or url)
  if not r then error(moonlet.http_error(502, err)) end
  return r
end

local function both(method, path, handler)
  app[method](app, path, handler)
  app[method](app, "/pool" .. path, { pool = true }, handler)
end

-- POST /call ["CMD", args...] -> {"res": reply} | {"err": "..."}
both("post", "/call", function(req)
  local r = client(req)
  local args = req:json()
  local res, err = r:call(unpack(args))
  if res == nil then return { err = err } end
  return { res = res }
end)

-- GET /connect?url= -> {"ok": true} | {"err": "..."}
both("get", "/connect", function(req)
  local r, err = moonlet.redis.connect(req.query.url)
  return r and { ok = true } or { err = err }
end)

-- POST /pipeline [["CMD", args...], ...] -> {"res": [...]} | {"err": "..."}
both("post", "/pipeline", function(req)
  local r = client(req)
  local cmds = req:json()
  local res, err = r:pipeline(function(p)
    for _, c in ipairs(cmds) do p:call(unpack(c)) end
  end)
  if not res then return { err = err } end
  return { res = res }
end)

-- GET /shortcuts: the common commands through their shortcuts, one key prefix per call
both("get", "/shortcuts", function(req)
  local r = client(req)
  local k = "sc:" .. req.query.k .. ":"
  local out = {}
  out.set = r:set(k .. "s", "v")
  out.get = r:get(k .. "s")
  out.missing = r:get(k .. "none") == moonlet.null
  out.incr = r:incr(k .. "n")
  out.incrby = r:incrby(k .. "n", 10)
  out.expire = r:expire(k .. "n", 100)
  out.ttl = r:ttl(k .. "n")
  out.exists = r:exists(k .. "s", k .. "n", k .. "none")
  out.mset = r:mset(k .. "a", 1, k .. "b", 2.5)
  out.mget = r:mget(k .. "a", k .. "b", k .. "none")
  out.hset = r:hset(k .. "h", "f1", "x", "f2", 7)
  out.hget = r:hget(k .. "h", "f1")
  out.hincrby = r:hincrby(k .. "h", "f2", 3)
  out.hgetall = r:hgetall(k .. "h")
  out.hdel = r:hdel(k .. "h", "f1")
  out.rpush = r:rpush(k .. "l", "a", "b", "c")
  out.lpush = r:lpush(k .. "l", "z")
  out.lrange = r:lrange(k .. "l", 0, -1)
  out.lpop = r:lpop(k .. "l")
  out.rpop = r:rpop(k .. "l")
  out.llen = r:llen(k .. "l")
  out.sadd = r:sadd(k .. "set", "m1", "m2")
  out.sismember = r:sismember(k .. "set", "m1")
  out.srem = r:srem(k .. "set", "m1")
  out.smembers = r:smembers(k .. "set")
  out.zadd = r:zadd(k .. "z", 2, "two", 1, "one")
  out.zrange = r:zrange(k .. "z", 0, -1, "WITHSCORES")
  out.zrem = r:zrem(k .. "z", "one")
  out.del = r:del(k .. "s", k .. "a")
  out.publish = r:publish(k .. "nobody", "x")
  out.big = r:incrby(k .. "big", 9007199254740000)
  local _, wrongtype = r:incr(k .. "l")
  out.wrongtype = wrongtype
  return out
end)

-- GET /blpop?key=&t= -> {"res": [key, value] | null}
both("get", "/blpop", function(req)
  local r = client(req)
  local res, err = r:blpop(req.query.key, tonumber(req.query.t) or 0)
  if res == nil then return { err = err } end
  return { res = res }
end)

-- GET /sub?ch=&n=[&pattern=1] -> {"msgs": [...]}: subscribes, sets sub:ready:<ch>, then
-- returns the next n messages (at most 5 s each)
both("get", "/sub", function(req)
  local r = client(req)
  local ch, n = req.query.ch, tonumber(req.query.n) or 1
  local sub, err
  if req.query.pattern then sub, err = r:psubscribe(ch) else sub, err = r:subscribe(ch) end
  if not sub then return { err = err } end
  r:set("sub:ready:" .. ch, 1)
  local msgs = {}
  for _ = 1, n do
    local m, merr = sub:next(5)
    if not m then msgs[#msgs + 1] = { err = merr } break end
    msgs[#msgs + 1] = m
  end
  sub:close()
  return { msgs = msgs }
end)

-- GET /sse?ch=: every message of ch as an SSE event until the client leaves
app:get("/sse", function(req)
  local r = client(req)
  local ch = req.query.ch
  return moonlet.sse(function(emit)
    local sub = assert(r:subscribe(ch))
    r:set("sub:ready:" .. ch, 1)
    for msg in sub:messages() do emit{ data = msg.data } end
  end)
end)

-- GET /primitives: moonlet.timeout and moonlet.gather around redis calls, a subscription
-- closed by another task while one waits, and the misuse that raises
both("get", "/primitives", function(req)
  local r = client(req)
  local out = {}
  -- a BLPOP given up by moonlet.timeout: its connection is closed, so the push after it is
  -- not eaten by it
  local v, e = moonlet.timeout(0.1, function() return r:blpop("prim:q", 0) end)
  out.blpop = { v == nil, e }
  r:rpush("prim:q", "kept")
  out.kept = r:lpop("prim:q")
  -- a command on the shared connection given up while the server stalls: its reply is
  -- thrown away when it comes, and the next reply goes to the next command
  r:set("prim:s", "after")
  v, e = moonlet.timeout(0.05, function() return r:call("DEBUG", "SLEEP", 0.3) end)
  out.stalled = { v == nil, e }
  out.next = r:get("prim:s")
  -- 50 INCRs at once from one request
  local fns = {}
  for i = 1, 50 do fns[i] = function() return r:incr("prim:n") end end
  local got = { moonlet.gather(unpack(fns)) }
  table.sort(got)
  out.gather = { got[1], got[50], #got }
  -- a subscription another task closes
  local sub = assert(r:subscribe("prim:ch"))
  moonlet.spawn(function() moonlet.sleep(0.05); sub:close() end)
  v, e = sub:next(5)
  out.closed = { v == nil, e }
  v, e = sub:next()
  out.after = { v == nil, e }
  -- misuse raises; a closed client raises, the others of its URL go on
  local r2 = client(req)
  r2:close()
  out.raises = {
    select(2, pcall(r.call, r, "SUBSCRIBE", "x")),
    select(2, pcall(r.call, r, "SET", "k", {})),
    select(2, pcall(r2.get, r2, "prim:s")),
    select(2, pcall(r.pipeline, r, function(p) p:blpop("prim:q", 0) end)),
    select(2, pcall(r.pipeline, r, function(p) p:call("subscribe", "x") end)),
  }
  out.open = r:get("prim:s")
  return out
end)

return app
