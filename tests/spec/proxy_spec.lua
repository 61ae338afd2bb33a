-- req.client and req.scheme through the real binary: the peer by default, what a trusted
-- proxy says under --proxy-headers (X-Forwarded-For/-Proto, RFC 7239 Forwarded), nothing
-- a client that is not trusted says; on the loop and in the pool alike.
local t = require "moonlet.testing"

local function who(srv, path, headers)
  local res = srv:request("GET", path, { headers = headers })
  assert.are.same(200, res.status)
  return res:json()
end

describe("proxy headers", function()
  local plain, trusting, strict, any
  lazy_setup(function()
    plain = t.server{ app = "tests/apps/proxy" }
    trusting = t.server{ app = "tests/apps/proxy", args = { "--proxy-headers" } }
    strict = t.server{ app = "tests/apps/proxy",
                       args = { "--proxy-headers", "--forwarded-allow-ips", "10.0.0.1, 10.0.0.2" } }
    any = t.server{ app = "tests/apps/proxy", args = { "--proxy-headers", "--forwarded-allow-ips", "*" } }
  end)
  lazy_teardown(function()
    for _, s in ipairs({ plain, trusting, strict, any }) do s:stop() end
  end)

  local xff = { ["x-forwarded-for"] = "203.0.113.7, 127.0.0.1", ["x-forwarded-proto"] = "https" }

  for _, path in ipairs({ "/who", "/pool/who" }) do
    it(path .. ": the peer's address and port, scheme http, headers or not, without the flag", function()
      local w = who(plain, path, xff)
      assert.are.same({ "127.0.0.1", "http" }, { w.client.host, w.scheme })
      assert.is_true(w.client.port > 0)
    end)

    it(path .. ": X-Forwarded-For and -Proto from a trusted peer (127.0.0.1 by default)", function()
      -- the rightmost address that is not a trusted proxy is the client
      assert.are.same({ client = { host = "203.0.113.7", port = 0 }, scheme = "https" },
                      who(trusting, path, xff))
      local w = who(trusting, path)   -- no headers: the peer itself
      assert.are.same({ "127.0.0.1", "http" }, { w.client.host, w.scheme })
    end)

    it(path .. ": RFC 7239 Forwarded, IPv6 with a port, quoted", function()
      local h = { forwarded = 'for="[2001:db8:cafe::17]:4711";proto=HTTPS;by=10.0.0.1' }
      assert.are.same({ client = { host = "2001:db8:cafe::17", port = 4711 }, scheme = "https" },
                      who(trusting, path, h))
      h = { forwarded = "for=198.51.100.3, for=127.0.0.1;proto=http" }
      assert.are.same({ client = { host = "198.51.100.3", port = 0 }, scheme = "http" },
                      who(any, path, h))
    end)

    it(path .. ": a peer not in --forwarded-allow-ips is not believed", function()
      local w = who(strict, path, xff)
      assert.are.same({ "127.0.0.1", "http" }, { w.client.host, w.scheme })
      w = who(strict, path, { forwarded = "for=6.6.6.6;proto=https" })
      assert.are.same({ "127.0.0.1", "http" }, { w.client.host, w.scheme })
    end)

    it(path .. ": '*' trusts any peer, and a chain stops at the first untrusted hop", function()
      -- under *, every hop is trusted: the leftmost address is the client
      assert.are.same("203.0.113.7", who(any, path, xff).client.host)
      local h = { ["x-forwarded-for"] = "1.1.1.1, 6.6.6.6, 127.0.0.1" }
      assert.are.same("6.6.6.6", who(trusting, path, h).client.host)
    end)
  end

  it("curl sees its own address", function()
    local r = t.run({ "-s", "http://127.0.0.1:" .. plain.port .. "/who" }, { bin = "curl" })
    assert.are.same(0, r.status)
    assert.is_truthy(r.stdout:find('"host":"127.0.0.1"', 1, true))
  end)
end)
