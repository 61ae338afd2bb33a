-- apps/hello, the first app a newcomer runs, answers what the README shows, whatever the
-- client sends.
local t = require "moonlet.testing"

describe("apps/hello", function()
  local srv
  before_all(function() srv = t.server{ app = "apps/hello" } end)
  after_all(function() srv:stop() end)

  local function curl(...)
    local out = t.run({ "-s", "-w", " %{http_code}", ... }, { bin = "curl" })
    eq(out.status, 0, out.stderr)
    return out.stdout
  end

  it("/echo answers the body it got, never a status the client picked", function()
    for _, body in ipairs{ "404", "260", "204", '{"a":[1,2]}' } do
      local res = assert(t.request(srv.port, "POST", "/echo", { body = body }))
      eq(res.status, 200, body)
      eq(res.body, body)
    end
    eq(curl("-d", "404", "http://127.0.0.1:" .. srv.port .. "/echo"), "404 200")
  end)
end)
