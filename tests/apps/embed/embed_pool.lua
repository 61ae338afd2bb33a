-- run_in_pool's side of tests/apps/embed: the same module, in a pool thread's state.
local moonlet = require "moonlet"
local _M = {}

function _M.state()
  local m = require "hostinfo"
  return { name = m.name(), id = m.state_id, pool = moonlet.in_pool(), upvalue_ok = m.upvalue_ok }
end

return _M
