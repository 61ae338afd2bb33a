-- moonlet.testing: what specs use to drive the real binary from the outside, in one
-- table (t.server, t.request, t.connect, t.listen, t.now, ...).
--   client    raw sockets, HTTP/1.x parsing, request/concurrent, fake upstreams, time
--   process   the binary (or any program) in the background, temp dirs and files
--   client(app_or_dir)   the in-process test client (app_client.lua): no socket, no binary
-- Assertions come from busted (luassert's assert.are.same, ...); JSON from lua-cjson.
local client = require "moonlet.testing.client"
local process = require "moonlet.testing.process"
local cjson = require "cjson"

---moonlet.testing: the spec helpers (sockets, processes) and the in-process test client.
---@class moonlet.testing: moonlet.testing.client, moonlet.testing.process
---@field client fun(app_or_dir: moonlet.App|string, opts?: table): moonlet.testing.Client
---@field json_decode fun(text: string): any
---@field null lightuserdata
local _M = {}

for _, part in ipairs({ client, process }) do
  for k, v in pairs(part) do _M[k] = v end
end
_M._VERSION = "0.2.0"
-- loaded on first use: it needs moonlet's runtime, the socket helpers do not
function _M.client(app_or_dir, opts)
  return require("moonlet.testing.app_client").client(app_or_dir, opts)
end
_M.json_decode = cjson.decode
_M.null = cjson.null

return _M
