local _M = {}
function _M.double(x) return x * 2 end
return _M
