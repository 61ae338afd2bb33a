-- A blocking sleep through LuaJIT's FFI: it holds the whole thread, like time.sleep in
-- Python. Fine on a pool thread; a mistake on the event loop.
local ffi = require "ffi"

pcall(ffi.cdef, "int poll(void *fds, unsigned long nfds, int timeout);")

local _M = {}

function _M.sleep(seconds)
  ffi.C.poll(nil, 0, math.floor(seconds * 1000))
  return seconds
end

return _M
