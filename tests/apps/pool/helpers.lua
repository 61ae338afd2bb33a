local moonlet = require "moonlet"

local _M = {}
-- which Lua state this is: a number each state takes once, when it requires this module
-- (the executor spec)
_M.state_id = moonlet.shared.dict("counters"):incr("state_ids", 1, 0)
function _M.double(x) return x * 2 end
return _M
