local _M = {}
function _M.html() return "<p>docs</p>" end
function _M.js() return "" end
_M.css = ""
return _M
