---@meta moonlet.core
-- LuaLS definitions for what moonlet's C core defines (core/core.c and the files it names):
-- the functions of the "moonlet.core" module that `moonlet` hands out as they are, the
-- objects they make (moonlet.cond(), moonlet.shared.dict()), and the fields C puts in `req`.
-- Not code: the binary has these built in; this file is installed for editors only.

---A condition: tasks wait on it until another task notifies them. Made by moonlet.cond().
---@class moonlet.Cond
local Cond = {}

---Waits (yields the coroutine, or blocks a pool thread) until notify_all or notify_one.
---@return any value what the notifier passed
function Cond:wait() end

---Wakes every waiting task; each one's wait() returns v.
---@param v? any
---@return integer woken the number of tasks woken
function Cond:notify_all(v) end

---Wakes the task that has waited longest; its wait() returns v.
---@param v? any
---@return integer woken 1 if a task was woken, else 0
function Cond:notify_one(v) end

---@return integer n the number of tasks waiting
function Cond:waiting() end

---A dictionary shared by the loop, every pool thread and every worker process
---(moonlet.shared.dict(name)), held in one shared-memory region of --shared-mem bytes under
---a lock. Values are strings, numbers or booleans; ttl is in seconds (0: never expires).
---@class moonlet.SharedDict
local SharedDict = {}

---Makes key the most recently used.
---@param key string
---@return string|number|boolean|nil value nil when absent or expired
function SharedDict:get(key) end

---Stores value under key (nil deletes it); when the region is full, evicts this
---dictionary's expired, then least recently used, entries until it fits.
---@param key string
---@param value string|number|boolean|nil
---@param ttl? number seconds until it expires
---@return true|nil ok
---@return string? err "no memory ..." (nothing left to evict) | "too large ..."
---@return boolean? forcible true when live entries were evicted
function SharedDict:set(key, value, ttl) end

---Stores value only if key is absent (evicting as set does).
---@param key string
---@param value string|number|boolean
---@param ttl? number
---@return true|nil ok
---@return string? err "exists" | "no memory ..." | "too large ..."
---@return boolean? forcible
function SharedDict:add(key, value, ttl) end

---As set, but never evicts: nil, "no memory ..." when the region is full.
---@param key string
---@param value string|number|boolean|nil
---@param ttl? number
---@return true|nil ok
---@return string? err
---@return false? forcible
function SharedDict:safe_set(key, value, ttl) end

---As add, but never evicts.
---@param key string
---@param value string|number|boolean
---@param ttl? number
---@return true|nil ok
---@return string? err "exists" | "no memory ..." | "too large ..."
---@return false? forcible
function SharedDict:safe_add(key, value, ttl) end

---Adds `by` atomically (increments from any thread or worker are never lost).
---@param key string
---@param by number
---@param init? number the value to start from when key is absent (else: nil, "not found")
---@param ttl? number applies when init creates the key
---@return number|nil value the new value
---@return string? err "not found" | "not a number" | "no memory ..."
---@return boolean? forcible true when creating the key evicted live entries
function SharedDict:incr(key, by, init, ttl) end

---@param key string
---@return true
function SharedDict:delete(key) end

---@param key string
---@return number|nil seconds left (0: never expires)
---@return string? err "not found"
function SharedDict:ttl(key) end

---@param key string
---@param ttl number seconds from now (0: never expires)
---@return true|nil ok
---@return string? err "not found"
function SharedDict:expire(key, ttl) end

---@param max? integer at most this many (0 or nil: all)
---@return string[] keys the live keys, most recently used first
function SharedDict:keys(max) end

---Removes every entry.
---@return true
function SharedDict:flush_all() end

---@return number bytes of the region all dictionaries share (--shared-mem)
function SharedDict:capacity() end

---@return number bytes of the region no dictionary uses now
function SharedDict:free_space() end

---The C functions of "moonlet.core" that the public API hands out unchanged.
---@class moonlet.core
local core = {}

---Waits `seconds` without blocking the loop (a pool thread sleeps).
---@param seconds number
function core.sleep(seconds) end

---@return number seconds monotonic time, sub-millisecond precision
function core.now() end

---Runs fn(...) as a detached task: it starts at once and runs until it first waits. Its
---errors are logged with a traceback.
---@param fn fun(...)
---@param ... any
function core.spawn(fn, ...) end

---@return moonlet.Cond
function core.cond() end

---@return boolean in_pool true on a pool thread
function core.in_pool() end

---@param name string 1 to 255 bytes
---@return moonlet.SharedDict dict the dictionary called name, created on first use
function core.shared_dict(name) end

---Encodes v as JSON (moonlet.array marks lists; moonlet.null is null).
---@param v any
---@return string json
function core.json_encode(v) end

---@param level "debug"|"info"|"warn"|"error"
---@param message string
function core.log(level, message) end

---The index of a moonlet.jobs queue in this process's metrics slot (core/prod/jobs_metrics.c).
---@param name string
---@return integer|nil index nil when metrics are off or the slot's 16 queues are taken
function core.jobs_metric_queue(name) end

---Records a figure of queue index: "running" (delta), "length" (value), "done" or
---"failed" (the run's seconds), "retried", "dead".
---@param index integer
---@param kind "running"|"length"|"done"|"failed"|"retried"|"dead"
---@param value? number
function core.jobs_metric(index, kind, value) end

return core
