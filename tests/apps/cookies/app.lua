-- req.cookies and moonlet.cookie, for tests/spec/cookies_spec.lua: every route exists for
-- a coroutine (/co/...) and a pooled route (/pool/...).
local moonlet = require "moonlet"

local app = moonlet.app{ title = "cookies" }

for prefix, opts in pairs{ ["/co"] = {}, ["/pool"] = { pool = true } } do
  app:get(prefix .. "/cookies", opts, function(req) return req.cookies end)
  -- ?name=...&value=... and the options as query fields: sets that cookie
  app:get(prefix .. "/set", opts, function(req)
    local q = req.query
    local ok, v = pcall(moonlet.cookie, q.name, q.value, {
      max_age = tonumber(q.max_age), path = q.path, domain = q.domain,
      secure = q.secure == "1", http_only = q.http_only == "1", same_site = q.same_site,
      expires = tonumber(q.expires) or q.expires,
    })
    if not ok then return 400, { error = v } end
    return 200, { cookie = v }, { ["set-cookie"] = v }
  end)
  -- no Path and no SameSite at all; two cookies at once
  app:get(prefix .. "/set-bare", opts, function()
    return 204, nil, { ["set-cookie"] = { moonlet.cookie("a", "1", { path = false,
                                                                     same_site = false }),
                                          moonlet.cookie("b", "2") } }
  end)
end

return app
