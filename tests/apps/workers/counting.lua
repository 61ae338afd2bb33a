-- run_in_pool's side of the workers app's /incr: n increments from a pool thread.
local moonlet = require "moonlet"
local _M = {}

function _M.incr(n)
  local hits = moonlet.shared.dict("hits")
  for _ = 1, n do hits:incr("n", 1, 0) end
  return n
end

return _M
