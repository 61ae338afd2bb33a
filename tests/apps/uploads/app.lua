-- Uploads for tests/spec/uploads_spec.lua: req:form() on multipart/form-data bodies, in
-- coroutine and pooled routes, a route with max_body raised, handlers that fail, wait or
-- move a file away. UPLOADS_BAD=<case> makes app.lua fail to load.
local moonlet = require "moonlet"

local app = moonlet.app{ title = "uploads" }

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- The form as JSON: text fields as they are, each file with its content read back.
local function describe(form)
  local function one(v)
    if type(v) ~= "table" then return v end
    if v.path then
      return { filename = v.filename, content_type = v.content_type, size = v.size,
               content = read(v.path), in_tmpdir = v.path:find("/moonlet-upload-", 1, true) ~= nil }
    end
    local list = {}
    for i, x in ipairs(v) do list[i] = one(x) end
    return list
  end
  local out = {}
  for k, v in pairs(form) do out[k] = one(v) end
  return out
end

local function form_route(req)
  return { form = describe(req:form()), body = #req.body, pooled = moonlet.in_pool() }
end

app:post("/form", form_route)
app:post("/pooled", { pool = true }, form_route)

-- 60 MB allowed here; only the sizes come back
app:post("/big", { max_body = 60 * 1024 * 1024 }, function(req)
  local f = req:form().file
  local fh = io.open(f.path, "rb")
  local size = fh:seek("end")
  fh:close()
  return { size = f.size, on_disk = size }
end)
app:post("/big-pooled", { max_body = 60 * 1024 * 1024, pool = true }, function(req)
  return { size = req:form().file.size }
end)

app:post("/fail", function(req)
  req:form()
  error("handler failed after reading the form")
end)
app:post("/fail-pooled", { pool = true }, function(req)
  req:form()
  error("pooled handler failed after reading the form")
end)

-- waits, so the client can leave while the files exist
app:post("/wait", function(req)
  req:form()
  moonlet.sleep(30)
  return "never"
end)

-- moves the upload out of the temporary directory: it stays
app:post("/move", function(req)
  local f = req:form().file
  assert(os.rename(f.path, req.query.to))
  return { moved = true }
end)

-- urlencoded forms still work
app:post("/urlencoded", function(req) return req:form() end)

local bad = os.getenv("UPLOADS_BAD")
if bad == "zero" then app:post("/x", { max_body = 0 }, function() end) end
if bad == "fraction" then app:post("/x", { max_body = 1.5 }, function() end) end
if bad == "string" then app:post("/x", { max_body = "1mb" }, function() end) end

return app
