-- What a handler returns becomes the response, the same way for coroutine routes (/co)
-- and pooled routes (/pool): tests/apps/responses.
local t = require "moonlet.testing"

describe("handler results", function()
  local srv
  before_all(function()
    srv = t.server{ app = "tests/apps/responses", args = { "--pool-size", "2" } }
  end)
  after_all(function() srv:stop() end)

  local function get(path) return assert(t.request(srv.port, "GET", path)) end
  local function post(path, body)
    return assert(t.request(srv.port, "POST", path, { body = body }))
  end

  for _, kind in ipairs{ "co", "pool" } do
    local p = "/" .. kind

    it(kind .. ": a lone number is the JSON body, never a status", function()
      local res = get(p .. "/lone-number")
      eq(res.status, 200)
      eq(res.headers["content-type"], "application/json")
      eq(res.body, "42")
    end)

    it(kind .. ": a lone nil is 200 without a body", function()
      local res = get(p .. "/lone-nil")
      eq(res.status, 200)
      eq(res.body, "")
    end)

    it(kind .. ": the client cannot pick the status through a JSON body", function()
      for _, body in ipairs{ "404", "260", "204", "99", "600" } do
        local res = post(p .. "/echo", body)
        eq(res.status, 200, body)
        eq(res.body, body)
      end
    end)

    it(kind .. ": status, nil is a response without a body", function()
      local res = get(p .. "/no-content")
      eq(res.status, 204)
      eq(res.body, "")
      eq(res.headers["content-length"], nil)
    end)

    it(kind .. ": takes any integer status from 200 to 599", function()
      for _, s in ipairs{ 200, 260, 404, 599 } do
        local res = get(p .. "/status?s=" .. s)
        eq(res.status, s)
        eq(res.body, "x")
      end
    end)

    it(kind .. ": refuses other statuses with a 500 and a log line", function()
      for _, s in ipairs{ "600", "1000", "99", "100", "-200", "0", "260.5", "abc", "nan" } do
        local mark = srv:mark()
        local res = get(p .. "/status?s=" .. s)
        eq(res.status, 500, s)
        eq(res.body, '{"detail":"Internal Server Error"}')
        srv:wait_log("invalid response status", 5, mark)
      end
      local mark = srv:mark()
      eq(get(p .. "/nil-err").status, 500)
      srv:wait_log("GET " .. p .. "/nil%-err: invalid response status nil", 5, mark)
    end)
  end
end)
