-- moonlet.cli: what the commands written in Lua share (`moonlet new`: cli/new.lua,
-- `moonlet routes`: cli/routes.lua). core/main.c runs each one's main(args), args being
-- the command line after the command's name, and exits with the status it returns.
local gsub, sub = string.gsub, string.sub

local _M = {}

-- Prints "moonlet: msg" on stderr as one line (a module's load error has its reason on a
-- line of its own: it is joined, as `moonlet serve` does). Returns the exit status, 2.
function _M.fail(msg)
  io.stderr:write("moonlet: ", (gsub(msg, "\n\t*", " ")), "\n")
  return 2
end

-- The one directory args must hold, without trailing slashes; or nil when args hold
-- anything else, after failing with usage.
function _M.dir_arg(args, usage)
  if #args ~= 1 or sub(args[1], 1, 1) == "-" then
    _M.fail(usage)
    return nil
  end
  return (gsub(args[1], "(.)/+$", "%1"))
end

return _M
