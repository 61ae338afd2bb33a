-- moonlet.jobs: durable background jobs on Redis streams (Celery's role, README
-- "Background jobs").
--
--   local jobs = moonlet.jobs.queue("emails", { redis = "redis://127.0.0.1:6379/0" })
--   jobs:task("send_welcome", function(job, user_id) ... end, { retries = 5, timeout = 30 })
--   local id = jobs:enqueue("send_welcome", 42, { delay = 60, id = "welcome-42" })
--   jobs:status(id)       --> "queued", { attempts = 0, ... }
--   jobs:result(id, 10)   --> the task's return value, waited for
--
-- Declared in app.lua, so every state (the loop's, each pool thread's) and every host and
-- worker knows the queue's tasks. `moonlet worker APPDIR --queue emails` (or `serve
-- --worker emails`) consumes: runtime.lifespan calls _serve after the startup hooks and
-- _drain before the shutdown hooks (core/host.c marks the app with _jobs_worker).
--
-- Redis layout, for a queue q (prefix P = "moonlet:jobs:{q}:"):
--   P.."stream"     the jobs ready to run: entries { id, task, args }; consumer group
--                   "workers"; an entry is acknowledged (XACK) and deleted (XDEL) once its
--                   job succeeded or failed for good
--   P.."job:"..id   a hash: state (queued|running|failed|done|dead), task, args (JSON),
--                   attempts, last_error, traceback, result (JSON), *_at (Redis ms); done
--                   jobs expire after result_ttl, dead ones stay until retried or deleted
--   P.."scheduled"  a sorted set of ids by due time (ms): delayed jobs and retries, moved
--                   into the stream when due (PROMOTE, atomic: one mover per job)
--   P.."dead"       the dead-letter stream: { id, task, error }
--   P.."seq"        the counter generated ids come from
--   P.."stats"      a hash of counters: done, failed, retried, dead
--   P.."every:"..task..":"..slot   SET NX: the periodic task ran in this period
-- Each step is one Redis script (EVALSHA), so one round trip and atomic.
local core = require "moonlet.core"
local redis = require "moonlet.redis"
local cjson = require "cjson"
local ffi = require "ffi"

local type, tostring, tonumber, error, select, pairs, ipairs, pcall, xpcall =
  type, tostring, tonumber, error, select, pairs, ipairs, pcall, xpcall
local setmetatable, getmetatable, unpack = setmetatable, getmetatable, unpack
local concat, floor, min = table.concat, math.floor, math.min
local fmt, find, match, gmatch = string.format, string.find, string.match, string.gmatch
local traceback = debug.traceback
local json_encode, json_decode, null = core.json_encode, cjson.decode, cjson.null
local now, sleep, spawn, log = core.now, core.sleep, core.spawn, core.log

local moonlet_mod   -- require "moonlet", at first use: it requires this module
local function moonlet()
  moonlet_mod = moonlet_mod or require "moonlet"
  return moonlet_mod
end

ffi.cdef [[
int getpid(void);
int gethostname(char *name, size_t len);
]]

---moonlet.jobs: queues of durable jobs on Redis.
---@class moonlet.jobs
local _M = { _VERSION = "0.1.0" }

local GROUP = "workers"
local BATCH = 200            -- entries one XREADGROUP takes at most
local TICK = 0.1             -- seconds between moves of due jobs (and periodic checks)
local RECLAIM_TICKS = 5      -- ticks between looks for jobs of dead workers
local RECLAIM_MARGIN = 500   -- ms past a task's timeout before its job is reclaimed: the
                             -- worker running it fails it first, if it is alive

local queues = {}   -- this state's queues by name (the last declaration wins)

---A queue of jobs (moonlet.jobs.queue).
---@class moonlet.jobs.Queue
---@field name string
local Queue = {}
local queue_mt = { __index = Queue }
_M.Queue = Queue

-- --- the Redis scripts ------------------------------------------------------------------
-- KEYS[1] is the queue's prefix: every key is under it (one Redis, not a cluster).

local NOW = [=[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
]=]

-- ARGV: n, then n times: id ("" to generate), task, args JSON, delay ms, at ms (0: none).
-- Returns { id1, created1, id2, created2, ... }: created 0 when the id existed already.
local ENQUEUE = NOW .. [=[
local p = KEYS[1]
local out, i = {}, 2
for _ = 1, tonumber(ARGV[1]) do
  local id, task, args = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local delay, at = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  i = i + 5
  local created = 1
  if id == '' then
    id = tostring(redis.call('INCR', p .. 'seq'))
  elseif redis.call('EXISTS', p .. 'job:' .. id) == 1 then
    created = 0
  end
  if created == 1 then
    local due = at > 0 and at or now + delay
    redis.call('HSET', p .. 'job:' .. id, 'state', 'queued', 'task', task, 'args', args,
               'attempts', 0, 'enqueued_at', now)
    if due > now then
      redis.call('ZADD', p .. 'scheduled', due, id)
    else
      redis.call('XADD', p .. 'stream', '*', 'id', id, 'task', task, 'args', args)
    end
  end
  out[#out + 1] = id
  out[#out + 1] = created
end
return out
]=]

-- ARGV: job ids just delivered. Marks them running; returns each one's attempts (this
-- one included), 0 for a job whose hash is gone (deleted: its entry is just acked).
local START = NOW .. [=[
local p, out = KEYS[1], {}
for i, id in ipairs(ARGV) do
  local k = p .. 'job:' .. id
  if redis.call('EXISTS', k) == 1 then
    out[i] = redis.call('HINCRBY', k, 'attempts', 1)
    redis.call('HSET', k, 'state', 'running', 'started_at', now)
  else
    out[i] = 0
  end
end
return out
]=]

-- ARGV: result_ttl seconds, then triples: entry id, job id, result JSON ("" for an entry
-- to ack only). Acks and deletes the entries, stores the results. Returns how many.
local FINISH = NOW .. [=[
local p, ttl, n = KEYS[1], tonumber(ARGV[1]), 0
local stream = p .. 'stream'
local eids = {}
for i = 2, #ARGV, 3 do
  eids[#eids + 1] = ARGV[i]
  if #eids == 500 then   -- one XACK and one XDEL for many entries: far cheaper than one each
    redis.call('XACK', stream, 'workers', unpack(eids))
    redis.call('XDEL', stream, unpack(eids))
    eids = {}
  end
  if ARGV[i + 2] ~= '' then
    local k = p .. 'job:' .. ARGV[i + 1]
    redis.call('HSET', k, 'state', 'done', 'result', ARGV[i + 2], 'finished_at', now)
    if ttl > 0 then redis.call('EXPIRE', k, ttl) end
    n = n + 1
  end
end
if #eids > 0 then
  redis.call('XACK', stream, 'workers', unpack(eids))
  redis.call('XDEL', stream, unpack(eids))
end
if n > 0 then redis.call('HINCRBY', p .. 'stats', 'done', n) end
return n
]=]

-- ARGV: entry id, job id, error, traceback, retries, backoff (seconds, the base).
-- A retry left: state failed, back in the scheduled set backoff^attempts s from now;
-- else: state dead, an entry in the dead-letter stream. Returns { "retry"|"dead", delay ms }.
local FAIL = NOW .. [=[
local p = KEYS[1]
local eid, id, err, tb = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retries, backoff = tonumber(ARGV[5]), tonumber(ARGV[6])
local k = p .. 'job:' .. id
redis.call('XACK', p .. 'stream', 'workers', eid)
redis.call('XDEL', p .. 'stream', eid)
redis.call('HINCRBY', p .. 'stats', 'failed', 1)
local attempts = tonumber(redis.call('HGET', k, 'attempts') or '1') or 1
if attempts <= retries then
  local delay = math.floor(backoff ^ attempts * 1000)
  redis.call('HSET', k, 'state', 'failed', 'last_error', err, 'traceback', tb, 'failed_at', now)
  redis.call('ZADD', p .. 'scheduled', now + delay, id)
  redis.call('HINCRBY', p .. 'stats', 'retried', 1)
  return { 'retry', delay }
end
local task = redis.call('HGET', k, 'task') or ''
local dead = redis.call('XADD', p .. 'dead', '*', 'id', id, 'task', task, 'error', err)
redis.call('HSET', k, 'state', 'dead', 'last_error', err, 'traceback', tb, 'failed_at', now,
           'dead_entry', dead)
redis.call('PERSIST', k)
redis.call('HINCRBY', p .. 'stats', 'dead', 1)
return { 'dead', 0 }
]=]

-- Moves the due jobs of the scheduled set into the stream. Returns how many.
local PROMOTE = NOW .. [=[
local p = KEYS[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'scheduled', '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. 'scheduled', id)
  local k = p .. 'job:' .. id
  local f = redis.call('HMGET', k, 'task', 'args')
  if f[1] then
    redis.call('HSET', k, 'state', 'queued')
    redis.call('XADD', p .. 'stream', '*', 'id', id, 'task', f[1], 'args', f[2])
  end
end
return #ids
]=]

-- ARGV: consumer, min idle ms, default timeout ms, then pairs: task, timeout ms.
-- Claims the entries delivered to other consumers and idle past their task's timeout (a
-- worker that died holding them). Returns them as XREADGROUP does: { { eid, fields } }.
local RECLAIM = [=[
local p, consumer, min_idle, default = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local stream = p .. 'stream'
local limits = {}
for i = 4, #ARGV, 2 do limits[ARGV[i]] = tonumber(ARGV[i + 1]) end
local out = {}
local pend = redis.call('XPENDING', stream, 'workers', 'IDLE', min_idle, '-', '+', 100)
for _, e in ipairs(pend) do
  local eid, owner, idle = e[1], e[2], tonumber(e[3])
  local entry = redis.call('XRANGE', stream, eid, eid)[1]
  if not entry then
    redis.call('XACK', stream, 'workers', eid)
  elseif owner ~= consumer then
    local task
    for i = 1, #entry[2], 2 do if entry[2][i] == 'task' then task = entry[2][i + 1] end end
    local limit = limits[task] or default
    if idle >= limit then
      local c = redis.call('XCLAIM', stream, 'workers', consumer, limit, eid)
      if c[1] then out[#out + 1] = c[1] end
    end
  end
end
return out
]=]

-- ARGV: task, period ms, args JSON. Enqueues the task once per period slot of Redis's
-- clock, whichever worker asks first. Returns the job id, or false.
local EVERY = NOW .. [=[
local p, task, period, args = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local slot = math.floor(now / period)
if not redis.call('SET', p .. 'every:' .. task .. ':' .. slot, '1', 'NX', 'PX', period * 2) then
  return false
end
local id = 'every:' .. task .. ':' .. slot
redis.call('HSET', p .. 'job:' .. id, 'state', 'queued', 'task', task, 'args', args,
           'attempts', 0, 'enqueued_at', now)
redis.call('XADD', p .. 'stream', '*', 'id', id, 'task', task, 'args', args)
return id
]=]

-- ARGV: job id. A dead job back in the stream, attempts from 0. Returns 1, or 0 when the
-- job is not dead.
local RETRY_DEAD = [=[
local p, id = KEYS[1], ARGV[1]
local k = p .. 'job:' .. id
local f = redis.call('HMGET', k, 'state', 'task', 'args', 'dead_entry')
if f[1] ~= 'dead' then return 0 end
if f[4] then redis.call('XDEL', p .. 'dead', f[4]) end
redis.call('HSET', k, 'state', 'queued', 'attempts', 0)
redis.call('HDEL', k, 'dead_entry')
redis.call('XADD', p .. 'stream', '*', 'id', id, 'task', f[2], 'args', f[3])
return 1
]=]

local scripts = {}   -- source -> its SHA1 once loaded (per state; the same on any server)

-- Runs a script with the queue's prefix as KEYS[1]: EVALSHA, loading it on NOSCRIPT
-- (a first use, a restarted server). Returns the reply, or nil, err.
local function script(r, src, prefix, ...)
  for _ = 1, 2 do
    local sha = scripts[src]
    if not sha then
      local s, err = r:call("SCRIPT", "LOAD", src)
      if not s then return nil, err end
      sha = s
      scripts[src] = sha
    end
    local res, err = r:call("EVALSHA", sha, 1, prefix, ...)
    if res ~= nil or not find(err, "^NOSCRIPT") then return res, err end
    scripts[src] = nil
  end
  return nil, "NOSCRIPT the script could not be loaded"
end

local function argerr(fname, n, msg, level)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. msg .. ")", level or 3)
end

-- --- declaring -----------------------------------------------------------------------------

---What moonlet.jobs.queue takes.
---@class moonlet.jobs.QueueOptions
---@field redis? string|moonlet.redis.Options default "redis://127.0.0.1:6379/0"
---@field result_ttl? number seconds a done job (and its result) is kept (default 3600)

---moonlet.jobs.queue(name, opts) -> the queue (declare it in app.lua). No I/O: Redis is
---reached at the first enqueue, status or worker.
---@param name string
---@param opts? moonlet.jobs.QueueOptions
---@return moonlet.jobs.Queue
function _M.queue(name, opts)
  if type(name) ~= "string" or not match(name, "^[%w_%-%.]+$") then
    argerr("queue", 1, "expected a name of letters, digits, _ - .")
  end
  opts = opts or {}
  if type(opts) ~= "table" then argerr("queue", 2, "expected a table of options") end
  local ttl = opts.result_ttl or 3600
  if type(ttl) ~= "number" or ttl < 0 then argerr("queue", 2, "result_ttl must be seconds >= 0") end
  local q = setmetatable({
    name = name, url = opts.redis or "redis://127.0.0.1:6379/0", result_ttl = floor(ttl),
    prefix = "moonlet:jobs:{" .. name .. "}:", tasks = {}, periodic = {},
  }, queue_mt)
  queues[name] = q
  return q
end

---What jobs:task takes.
---@class moonlet.jobs.TaskOptions
---@field retries? integer failures retried before the job is dead (default 3)
---@field backoff? number a retry waits backoff^attempt seconds (default 2)
---@field timeout? number seconds a run may take (default 30): past it the run is
---cancelled and fails; a worker that dies holding it loses it to another after it
---@field pool? boolean run on an executor thread (blocking code), not as a coroutine

---jobs:task(name, fn, opts): fn(job, ...) runs the jobs enqueued as name; job is { id,
---queue, task, attempt }; its first return value (a JSON value) is the job's result.
---@param name string
---@param fn function
---@param opts? moonlet.jobs.TaskOptions
function Queue:task(name, fn, opts)
  if type(name) ~= "string" or name == "" then argerr("task", 1, "expected a task name") end
  if type(fn) ~= "function" then argerr("task", 2, "expected a function(job, ...)") end
  opts = opts or {}
  local t = { name = name, fn = fn, retries = opts.retries or 3, backoff = opts.backoff or 2,
              timeout = opts.timeout or 30, pool = opts.pool and true or false }
  if type(t.retries) ~= "number" or t.retries < 0 or t.retries % 1 ~= 0 then
    argerr("task", 3, "retries must be an integer >= 0")
  end
  if type(t.backoff) ~= "number" or t.backoff < 0 then argerr("task", 3, "backoff must be a number >= 0") end
  if type(t.timeout) ~= "number" or t.timeout <= 0 then argerr("task", 3, "timeout must be seconds > 0") end
  self.tasks[name] = t
  return self
end

-- The arguments as a JSON array; raises at the caller level levels up.
local function encode_args(level, fname, first, n, ...)
  local parts = {}
  for i = 1, n do
    local v = select(i, ...)
    local ok, s = pcall(json_encode, v)
    if not ok then
      error(fmt("moonlet.jobs: %s: argument #%d is not a JSON value (%s)", fname, first + i - 1, s), level)
    end
    parts[i] = s
  end
  return "[" .. concat(parts, ",") .. "]"
end

---jobs:every(seconds, task, ...): the task runs once every period across all the workers
---of the queue (each period of Redis's clock, whichever worker comes first enqueues it).
---@param seconds number
---@param task string
---@param ... any the task's arguments (JSON values)
function Queue:every(seconds, task, ...)
  if type(seconds) ~= "number" or seconds < 0.01 then argerr("every", 1, "expected seconds >= 0.01") end
  if type(task) ~= "string" then argerr("every", 2, "expected a task name") end
  self.periodic[#self.periodic + 1] = { task = task, ms = floor(seconds * 1000),
                                        args = encode_args(3, "every", 3, select("#", ...), ...) }
  return self
end

-- --- enqueueing ---------------------------------------------------------------------------

local OPTION_KEYS = { id = true, delay = true, at = true }

-- Is v the options table ending an enqueue's arguments? A table of only id, delay, at.
local function is_options(v)
  if type(v) ~= "table" or getmetatable(v) then return false end
  for k in pairs(v) do
    if not OPTION_KEYS[k] then return false end
  end
  return true
end

-- Appends one job's ENQUEUE arguments to argv: task, args..., [opts].
local function job_argv(argv, fname, task, ...)
  if type(task) ~= "string" or task == "" then argerr(fname, 1, "expected a task name", 4) end
  local n = select("#", ...)
  local opts = n > 0 and is_options((select(n, ...))) and (select(n, ...)) or nil
  if opts then n = n - 1 end
  local id, delay, at = "", 0, 0
  if opts then
    if opts.id ~= nil then
      id = opts.id
      if type(id) ~= "string" or id == "" or match(id, "^%d+$") then
        argerr(fname, n + 2, "id must be a non-empty string, not all digits (generated ids are)", 4)
      end
    end
    if opts.delay ~= nil then
      if type(opts.delay) ~= "number" or opts.delay < 0 then argerr(fname, n + 2, "delay must be seconds >= 0", 4) end
      delay = floor(opts.delay * 1000)
    end
    if opts.at ~= nil then
      if type(opts.at) ~= "number" then argerr(fname, n + 2, "at must be a Unix time in seconds", 4) end
      at = floor(opts.at * 1000)
    end
  end
  local k = #argv
  argv[k + 1], argv[k + 2], argv[k + 3] = id, task, encode_args(4, fname, 2, n, ...)
  argv[k + 4], argv[k + 5] = delay, at
end

local function connect(q)
  return redis.connect(q.url)
end

---jobs:enqueue(task, ...[, opts]) -> the job's id, or nil, err when Redis fails. The
---arguments must be JSON values (else it raises). A last argument that is a table of only
---id, delay, at is the options: { id = "welcome-42" } (enqueueing the same id again does
---nothing while the job is kept), { delay = seconds }, { at = unix_seconds }. To pass
---such a table as the last argument, add {} after it.
---@param task string
---@param ... any the task's arguments (JSON values), then the options if any
---@return string|nil id
---@return string|boolean created_or_err true when new, false when the id existed
function Queue:enqueue(task, ...)
  local argv = { 1 }
  job_argv(argv, "enqueue", task, ...)
  local r, err = connect(self)
  if not r then return nil, err end
  local res, serr = script(r, ENQUEUE, self.prefix, unpack(argv))
  if not res then return nil, serr end
  return res[1], res[2] == 1
end

---jobs:enqueue_many(list) -> the ids in order, or nil, err: list holds { task, args...[,
---opts] } tables, sent to Redis in one script call per 1,000 jobs.
---@param list table[]
---@return string[]|nil ids
---@return string? err
function Queue:enqueue_many(list)
  if type(list) ~= "table" then argerr("enqueue_many", 1, "expected a list of { task, args... }") end
  local r, err = connect(self)
  if not r then return nil, err end
  local ids = {}
  for first = 1, #list, 1000 do
    local argv = { 0 }
    for i = first, min(#list, first + 999) do
      local j = list[i]
      if type(j) ~= "table" then argerr("enqueue_many", 1, "item " .. i .. " is not a table") end
      job_argv(argv, "enqueue_many", unpack(j, 1, j.n or #j))
      argv[1] = argv[1] + 1
    end
    local res, serr = script(r, ENQUEUE, self.prefix, unpack(argv))
    if not res then return nil, serr end
    for i = 1, #res, 2 do ids[#ids + 1] = res[i] end
  end
  return ids
end

-- --- status and results --------------------------------------------------------------------

---jobs:status(id) -> "queued" | "running" | "failed" (a retry is due) | "done" | "dead",
---and { attempts, last_error, traceback, task, enqueued_at, ... }; nil, "unknown job"
---(never enqueued, or expired after result_ttl); nil, err when Redis fails.
---@param id string
function Queue:status(id)
  if type(id) ~= "string" then argerr("status", 1, "expected a job id") end
  local r, err = connect(self)
  if not r then return nil, err end
  local h, herr = r:hgetall(self.prefix .. "job:" .. id)
  if not h then return nil, herr end
  if not h.state then return nil, "unknown job" end
  h.attempts = tonumber(h.attempts)
  return h.state, h
end

---jobs:result(id[, timeout]) -> the job's result once it is done (waits: yields in a
---coroutine, blocks a pool thread); nil, "timeout" after timeout seconds (default 30);
---nil, "dead: <error>"; nil, "unknown job"; nil, err when Redis fails.
---@param id string
---@param timeout? number
function Queue:result(id, timeout)
  if type(id) ~= "string" then argerr("result", 1, "expected a job id") end
  local deadline = now() + (timeout or 30)
  local wait = 0.002
  local r, err = connect(self)
  if not r then return nil, err end
  local key = self.prefix .. "job:" .. id
  while true do
    local f, ferr = r:call("HMGET", key, "state", "result", "last_error")
    if not f then return nil, ferr end
    local state = f[1]
    if state == null then return nil, "unknown job" end
    if state == "done" then return json_decode(f[2]) end
    if state == "dead" then return nil, "dead: " .. tostring(f[3]) end
    local left = deadline - now()
    if left <= 0 then return nil, "timeout" end
    sleep(min(wait, left))
    wait = min(wait * 2, 0.1)
  end
end

---jobs:retry_dead(id) -> true once the dead job is queued again (attempts from 0); nil,
---"not dead"; nil, err when Redis fails.
---@param id string
function Queue:retry_dead(id)
  if type(id) ~= "string" then argerr("retry_dead", 1, "expected a job id") end
  local r, err = connect(self)
  if not r then return nil, err end
  local res, serr = script(r, RETRY_DEAD, self.prefix, id)
  if not res then return nil, serr end
  if res == 0 then return nil, "not dead" end
  return true
end

---jobs:counts() -> { queued, running, scheduled, dead, done, failed, retried }: the first
---four now (running: delivered, not acknowledged), the last three since the queue began.
function Queue:counts()
  local r, err = connect(self)
  if not r then return nil, err end
  local p = self.prefix
  local res, perr = r:pipeline(function(pl)
    pl:call("XLEN", p .. "stream")
    pl:call("XPENDING", p .. "stream", GROUP)
    pl:call("ZCARD", p .. "scheduled")
    pl:call("XLEN", p .. "dead")
    pl:call("HGETALL", p .. "stats")
  end)
  if not res then return nil, perr end
  local pending = type(res[2]) == "table" and tonumber(res[2][1]) or 0
  local c = { queued = res[1] - pending, running = pending, scheduled = res[3], dead = res[4],
              done = 0, failed = 0, retried = 0 }
  local stats = res[5]
  for i = 1, #stats, 2 do c[stats[i]] = tonumber(stats[i + 1]) end
  return c
end

-- --- running tasks (the worker) ------------------------------------------------------------

-- Decodes a job's JSON arguments: the list and its length (nulls in it become nil).
local function decode_args(text)
  local ok, args = pcall(json_decode, text)
  if not ok or type(args) ~= "table" then return nil, 0 end
  local n = #args
  for i = 1, n do
    if args[i] == null then args[i] = nil end
  end
  return args, n
end

---On a pool (executor) thread: runs a pool = true task of a queue app.lua declared there.
---@param queue string
---@param task string
---@param job table { id, queue, task, attempt }
---@param args_json string the arguments, a JSON array
---@return any result
function _M._pooled(queue, task, job, args_json)
  local q = queues[queue]
  local t = q and q.tasks[task]
  if not t then error("moonlet.jobs: task " .. task .. " is not declared on this thread", 0) end
  local args, n = decode_args(args_json)
  return t.fn(job, unpack(args, 1, n))
end

local function on_error(e)
  local msg = type(e) == "table" and e.detail or tostring(e)
  return { msg = tostring(msg), tb = traceback(tostring(msg), 2) }
end

local function run_coroutine(t, job, args, n)
  local ok, res = xpcall(t.fn, on_error, job, unpack(args, 1, n))
  return ok, res
end

local function run_pooled(q, t, job, args_json)
  local ok, res = pcall(moonlet().run_in_pool, "moonlet.jobs._pooled", q.name, t.name, job, args_json)
  if ok then return true, res end
  local msg = tostring(type(res) == "table" and res.detail or res)
  return false, { msg = match(msg, "^[^\n]*"), tb = msg }
end

-- The queues' metrics (core/prod/jobs_metrics.c; nothing while metrics are off):
-- metric(queue, "running", delta | "length", n | "done"/"failed", seconds | "retried" | "dead")
local metric_index = {}   -- queue name -> its index in this process's metrics slot, or false
local jobs_metric, jobs_metric_queue = core.jobs_metric, core.jobs_metric_queue
local function metric(queue, kind, v)
  local i = metric_index[queue]
  if i == nil then
    i = jobs_metric_queue(queue) or false
    metric_index[queue] = i
  end
  if i then jobs_metric(i, kind, v) end
end

-- The worker of one queue in this state: w = { q, consumer, concurrency, running,
-- unacked, acks, stopping }.
local function flush_acks(w)
  while #w.acks > 0 do
    local batch = w.acks
    w.acks = {}
    local r, err = connect(w.q)
    local res
    if r then res, err = script(r, FINISH, w.q.prefix, w.q.result_ttl, unpack(batch)) end
    if not res then
      log("warn", fmt("jobs %s: acknowledging %d job(s) failed (they will run again): %s",
                      w.q.name, #batch / 3, tostring(err)))
    end
    w.unacked = w.unacked - #batch / 3
  end
  w.flushing = false
end

local function finish(w, eid, id, result)
  local acks = w.acks
  acks[#acks + 1], acks[#acks + 2], acks[#acks + 3] = eid, id, result
  if not w.flushing then
    w.flushing = true
    spawn(flush_acks, w)
  end
end

local function fail(w, eid, id, task, msg, tb, retries, backoff)
  local r, err = connect(w.q)
  local res
  if r then res, err = script(r, FAIL, w.q.prefix, eid, id, msg, tb or msg, retries, backoff) end
  if not res then
    log("error", fmt("jobs %s: job %s (%s) failed: %s; recording the failure failed too: %s",
                     w.q.name, id, task, msg, tostring(err)))
  elseif res[1] == "retry" then
    metric(w.q.name, "retried")
    log("warn", fmt("jobs %s: job %s (%s) failed, retry in %.1fs: %s", w.q.name, id, task,
                    res[2] / 1000, msg))
  else
    metric(w.q.name, "dead")
    log("error", fmt("jobs %s: job %s (%s) is dead: %s", w.q.name, id, task, msg))
  end
  w.unacked = w.unacked - 1
end

local function run_job(w, eid, id, task, args_json, attempt)
  local q = w.q
  local t = q.tasks[task]
  local ok, res
  if not t then
    fail(w, eid, id, task, "unknown task '" .. task .. "' (not declared in queue " .. q.name
         .. " of this app)", nil, 0, 0)
  elseif attempt > t.retries + 1 then   -- reclaimed again and again: its workers die on it
    fail(w, eid, id, task, fmt("lost %d time(s): the workers running it stopped", attempt - 1),
         nil, 0, 0)
  else
    local job = { id = id, queue = q.name, task = task, attempt = attempt }
    local t0 = now()
    metric(q.name, "running", 1)
    if t.pool then
      ok, res = moonlet().timeout(t.timeout, run_pooled, q, t, job, args_json)
    else
      local args, n = decode_args(args_json)
      if not args then
        ok, res = false, { msg = "arguments are not a JSON array: " .. tostring(args_json) }
      else
        ok, res = moonlet().timeout(t.timeout, run_coroutine, t, job, args, n)
      end
    end
    metric(q.name, "running", -1)
    local took = now() - t0
    if ok == nil then res = { msg = fmt("timeout: the run took more than %gs", t.timeout) } end
    local text
    if ok then
      local eok, s = pcall(json_encode, res)
      if eok then text = s else ok, res = false, { msg = "the result is not a JSON value: " .. s } end
    end
    if ok then
      metric(q.name, "done", took)
      finish(w, eid, id, text)
    else
      metric(q.name, "failed", took)
      fail(w, eid, id, task, res.msg, res.tb, t.retries, t.backoff)
    end
  end
  w.running = w.running - 1
  if w.waiting then
    w.waiting = false
    w.slot:notify_all()
  end
end

-- Starts the entries delivered to this worker (XREADGROUP's or RECLAIM's shape).
local function start_entries(w, entries)
  local n = #entries
  if n == 0 then return end
  local ids, fields = {}, {}
  for i = 1, n do
    local f = {}
    local kv = entries[i][2]
    for j = 1, #kv, 2 do f[kv[j]] = kv[j + 1] end
    fields[i], ids[i] = f, f.id or ""
  end
  local r, err = connect(w.q)
  local attempts
  if r then attempts, err = script(r, START, w.q.prefix, unpack(ids)) end
  if not attempts then   -- not acked: they are delivered again after their timeout
    log("warn", fmt("jobs %s: starting %d job(s) failed: %s", w.q.name, n, tostring(err)))
    return
  end
  for i = 1, n do
    local eid, f = entries[i][1], fields[i]
    w.unacked = w.unacked + 1
    if attempts[i] == 0 then
      finish(w, eid, ids[i], "")   -- its hash is gone: nothing to run
    else
      w.running = w.running + 1
      spawn(run_job, w, eid, f.id, f.task or "", f.args or "[]", attempts[i])
    end
  end
end

local function ensure_group(r, q)
  local ok, err = r:call("XGROUP", "CREATE", q.prefix .. "stream", GROUP, "0", "MKSTREAM")
  if ok or find(err or "", "^BUSYGROUP") then return true end
  return nil, err
end

-- The fetch loop of one queue: XREADGROUP as many entries as there are free slots.
local function fetch_loop(w)
  local q = w.q
  local stream = q.prefix .. "stream"
  local full = false   -- the last read filled its batch: read again without blocking
  while not w.stopping do
    local free = w.concurrency - w.running
    if free <= 0 then
      w.waiting = true
      w.slot:wait()
    else
      local r, err = connect(q)
      local res
      if r then
        local count = min(free, BATCH)
        if full then
          res, err = r:call("XREADGROUP", "GROUP", GROUP, w.consumer, "COUNT", count,
                            "STREAMS", stream, ">")
        else
          res, err = r:call("XREADGROUP", "GROUP", GROUP, w.consumer, "COUNT", count,
                            "BLOCK", 500, "STREAMS", stream, ">")
        end
        if res == nil and find(err or "", "^NOGROUP") then
          res, err = ensure_group(r, q)
          if res then res = null end
        end
        if res then
          local entries = res ~= null and res[1][2] or {}
          full = #entries == count
          start_entries(w, entries)
        end
      end
      if not res then
        log("warn", fmt("jobs %s: reading the queue failed, again in 1s: %s", q.name, tostring(err)))
        sleep(1)
      end
    end
  end
  w.fetching = false
end

-- Every TICK: moves due jobs into the stream, enqueues periodic tasks, and now and then
-- reclaims the jobs of dead workers.
local function tick_loop(w)
  local q = w.q
  local ticks = 0
  local reclaim_argv = { w.consumer, 0, 0 }
  local lowest
  for name, t in pairs(q.tasks) do
    local ms = floor(t.timeout * 1000) + RECLAIM_MARGIN
    reclaim_argv[#reclaim_argv + 1] = name
    reclaim_argv[#reclaim_argv + 1] = ms
    lowest = lowest and min(lowest, ms) or ms
  end
  reclaim_argv[2] = lowest or 30000 + RECLAIM_MARGIN
  reclaim_argv[3] = 30000 + RECLAIM_MARGIN   -- a task this app does not declare
  reclaim_argv[2] = min(reclaim_argv[2], reclaim_argv[3])
  while not w.stopping do
    local r, err = connect(q)
    if r then
      local _
      _, err = script(r, PROMOTE, q.prefix)
      for _, p in ipairs(q.periodic) do
        if not err then _, err = script(r, EVERY, q.prefix, p.task, p.ms, p.args) end
      end
      if not err and ticks % RECLAIM_TICKS == 0 and w.running < w.concurrency then
        local claimed
        claimed, err = script(r, RECLAIM, q.prefix, unpack(reclaim_argv))
        if claimed and #claimed > 0 then
          log("info", fmt("jobs %s: reclaimed %d job(s) of a worker that stopped", q.name, #claimed))
          start_entries(w, claimed)
        end
      end
      if metric_index[q.name] then   -- the queue length gauge, sampled (metrics on)
        local n = r:call("XLEN", q.prefix .. "stream")
        if type(n) == "number" then metric(q.name, "length", n) end
      end
    end
    if err then log("warn", fmt("jobs %s: %s", q.name, tostring(err))) end
    ticks = ticks + 1
    sleep(TICK)
  end
end

local function hostname()
  local buf = ffi.new("char[256]")
  if ffi.C.gethostname(buf, 256) ~= 0 then return "host" end
  return ffi.string(buf)
end

---runtime.lifespan, after the startup hooks of a worker host (cfg.jobs_worker): starts
---consuming every queue named in spec.queues (a comma list). Raises when app.lua declares
---no such queue.
---@param app moonlet.App
---@param spec table { queues = "a,b", concurrency = n, graceful_timeout = s }
function _M._serve(app, spec)
  local workers = {}
  local consumer = fmt("%s-%d-%04x", hostname(), ffi.C.getpid(), floor(now() * 1e6) % 65536)
  for name in gmatch(spec.queues, "[^,]+") do
    local q = queues[name]
    if not q then
      error(fmt("moonlet worker: the app declares no queue '%s' (moonlet.jobs.queue(\"%s\", ...) in app.lua)",
                name, name), 0)
    end
    local r, err = connect(q)
    if r then err = select(2, ensure_group(r, q)) end
    if err then error(fmt("moonlet worker: queue %s: %s", name, err), 0) end
    metric(name, "length", 0)   -- its series are on the metrics page from the start
    local w = { q = q, consumer = consumer, concurrency = spec.concurrency, running = 0,
                unacked = 0, acks = {}, slot = core.cond(), fetching = true }
    workers[#workers + 1] = w
    local tasks = {}
    for t in pairs(q.tasks) do tasks[#tasks + 1] = t end
    table.sort(tasks)
    log("info", fmt("worker: queue %s, %d task(s) (%s), concurrency %d, consumer %s", name,
                    #tasks, concat(tasks, " "), spec.concurrency, consumer))
  end
  app._jobs_workers = workers
  for _, w in ipairs(workers) do
    spawn(fetch_loop, w)
    spawn(tick_loop, w)
  end
end

---runtime.lifespan, before the shutdown hooks: stops taking jobs and waits for the
---running ones (and their acknowledgements), up to the graceful timeout less a margin for
---the hooks. What is still running then stays pending: another worker reclaims it.
---@param app moonlet.App
---@param spec table app._jobs_worker (see _serve)
function _M._drain(app, spec)
  local workers = app._jobs_workers
  if not workers then return end
  local deadline = now() + (spec.graceful_timeout or 10) * 0.9
  local running = 0
  for _, w in ipairs(workers) do
    w.stopping = true
    running = running + w.running
    if w.waiting then w.slot:notify_all() end
  end
  log("info", fmt("worker: stopping, %d job(s) running", running))
  while now() < deadline do
    local busy = false
    for _, w in ipairs(workers) do
      if w.unacked > 0 or w.fetching or w.flushing then busy = true end
    end
    if not busy then
      log("info", "worker: every running job finished")
      return
    end
    sleep(0.02)
  end
  local left = 0
  for _, w in ipairs(workers) do left = left + w.unacked end
  log("warn", fmt("worker: graceful timeout, %d job(s) left pending (another worker reclaims them)", left))
end

return _M
