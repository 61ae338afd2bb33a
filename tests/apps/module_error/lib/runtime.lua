local M = {}
local cfg = nil
M.port = cfg.port
return M
