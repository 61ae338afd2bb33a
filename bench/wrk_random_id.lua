-- bench/wrk_random_id.lua: wrk asks for PREFIX..ID with ID random in 1..MAX.
--   WRK_ID_PREFIX=/account/ WRK_ID_MAX=1000000 wrk -s bench/wrk_random_id.lua http://127.0.0.1:PORT
-- (wrk reads the script once per thread; each thread seeds its own generator.)
local prefix = os.getenv("WRK_ID_PREFIX") or "/item/"
local max = tonumber(os.getenv("WRK_ID_MAX")) or 10000
local random, format = math.random, wrk.format

function init()
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  return format("GET", prefix .. random(1, max))
end
