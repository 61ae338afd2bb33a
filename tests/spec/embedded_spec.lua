-- The binary carries its Lua side (lua/moonlet) as LuaJIT bytecode with line information
-- (tools/embedgen.c): README "Install".
local t = require "moonlet.testing"

local BIN = os.getenv("MOONLET_BIN") or "build/moonlet"

describe("the embedded Lua side", function()
  it("keeps its file names and line numbers for functions and tracebacks", function()
    local moonlet = require "moonlet"
    local info = debug.getinfo(moonlet.app, "S")
    assert.matches("^@lua/moonlet/[%w_/]+%.lua$", info.source)
    assert.is_true(info.linedefined > 0)
    local ok, tb = xpcall(moonlet.app, debug.traceback, 42)
    assert.is_false(ok)
    assert.matches("lua/moonlet/app%.lua:%d+: in function", tb)
  end)

  it("is bytecode: the sources' comments are not in the binary, their strings are", function()
    local f = assert(io.open(BIN, "rb"))
    local bytes = f:read("*a")
    f:close()
    local src = assert(t.read_file("lua/moonlet/runtime.lua"))
    local comment = assert(src:match("^(%-%- [^\n]+)"))
    assert.is_nil(bytes:find(comment, 1, true))
    -- a string constant of the same file stays (the bytecode keeps constants)
    local constant = assert(src:match('require "(moonlet%.[%w_]+)"'))
    assert.is_truthy(bytes:find(constant, 1, true))
  end)
end)
