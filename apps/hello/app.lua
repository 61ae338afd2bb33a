-- apps/hello: the first app. Run it with `make run`, then open http://127.0.0.1:8000/hello
local moonlet = require "moonlet"

local app = moonlet.app{ title = "hello", version = "1.0.0" }

app:get("/hello", function()
  return { message = "hello" }
end)

app:get("/items/{id:int}", function(req)
  return { id = req.params.id }
end)

-- GET /sleep?s=0.5 waits without blocking anyone else (s defaults to 1)
app:get("/sleep", function(req)
  local s = tonumber(req.query.s or 1)
  if not (s and s >= 0 and s <= 60) then   -- written so that NaN fails it too
    error(moonlet.http_error(422, "s must be a number from 0 to 60"))
  end
  moonlet.sleep(s)
  return { slept = s }
end)

app:post("/echo", function(req)
  return req:json()
end)

return app
