-- multipart/form-data uploads through the real binary (tests/apps/uploads): req:form() with
-- curl -F and with raw bytes, for both kinds of route; files streamed to $TMPDIR and gone
-- when the request ends however it ends; the route option max_body; malformed bodies.
local t = require "moonlet.testing"

local function listing(dir)
  local p = io.popen("ls -A " .. t.shell_quote(dir))
  local out = p:read("*a")
  p:close()
  local names = {}
  for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
  return names
end

-- The files in dir once it holds `want` of them (or after 10 s: then what it holds).
local function wait_files(dir, want)
  local names
  for _ = 1, 1000 do
    names = listing(dir)
    if #names == want then break end
    t.sleep(0.01)
  end
  return names
end

-- A multipart body: parts are { name, content[, filename[, type]] }.
local function multipart(boundary, parts)
  local out = {}
  for _, p in ipairs(parts) do
    local disp = 'Content-Disposition: form-data; name="' .. p[1] .. '"'
    if p[3] then disp = disp .. '; filename="' .. p[3] .. '"' end
    out[#out + 1] = "--" .. boundary .. "\r\n" .. disp .. "\r\n"
                    .. (p[4] and ("Content-Type: " .. p[4] .. "\r\n") or "") .. "\r\n"
                    .. p[2] .. "\r\n"
  end
  return table.concat(out) .. "--" .. boundary .. "--\r\n"
end

local function post(port, path, boundary, body, extra)
  local headers = { ["Content-Type"] = 'multipart/form-data; boundary="' .. boundary .. '"' }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return assert(t.request(port, "POST", path, { headers = headers, body = body }))
end

local function vm(pid, field)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

describe("uploads", function()
  local srv, tmp, files
  lazy_setup(function()
    tmp = t.tmpdir()
    files = t.tmpdir()
    srv = t.server{ app = "tests/apps/uploads", env = { TMPDIR = tmp } }
  end)
  lazy_teardown(function() srv:stop() end)
  after_each(function()
    assert.are.same({}, wait_files(tmp, 0))   -- every test leaves no upload behind
  end)

  local function file(name, content)
    local path = files .. "/" .. name
    t.write_file(path, content)
    return path
  end

  local function curl(path, ...)
    local r = t.run({ "-s", "-w", "\n%{http_code}", "http://127.0.0.1:" .. srv.port .. path, ... },
                    { bin = "curl", timeout = 60 })
    local body, code = r.stdout:match("^(.*)\n(%d+)$")
    return tonumber(code), body
  end

  for _, route in ipairs{ "/form", "/pooled" } do
    it(route .. ": curl -F text fields, files, several files and a name given twice", function()
      local a = file("a.txt", "first file\r\n--not a boundary\r\n")
      local b = file("b.bin", "\0\1\2\r\n~")   -- JSON carries only UTF-8 back
      local code, body = curl(route, "-F", "title=hello world", "-F", "tag=x", "-F", "tag=y",
                              "-F", "doc=@" .. a, "-F", "pics=@" .. b .. ";type=image/x-test",
                              "-F", "pics=@" .. a)
      assert.are.same(200, code)
      local res = require("cjson").decode(body)
      assert.are.same({
        form = {
          title = "hello world",
          tag = { "x", "y" },
          doc = { filename = "a.txt", content_type = "text/plain", size = 30,
                  content = "first file\r\n--not a boundary\r\n", in_tmpdir = true },
          pics = {
            { filename = "b.bin", content_type = "image/x-test", size = 6,
              content = "\0\1\2\r\n~", in_tmpdir = true },
            { filename = "a.txt", content_type = "text/plain", size = 30,
              content = "first file\r\n--not a boundary\r\n", in_tmpdir = true },
          },
        },
        body = 0,                          -- req.body is "" for a multipart body
        pooled = route == "/pooled",
      }, res)
    end)

    it(route .. ": raw bytes, an odd boundary, CRLFs in content, an empty file", function()
      local boundary = "'()+_,-./:=? x"
      local body = "preamble to ignore\r\n" .. multipart(boundary, {
        { "crlf", "\r\n\r\n--'()+_,-./:=?\r\n" },
        { "empty", "", "empty.txt", "application/octet-stream" },
        { "up", "--" .. boundary .. "x", "u.txt" },
      }) .. "epilogue to ignore"
      local res = post(srv.port, route, boundary, body)
      assert.are.same(200, res.status)
      assert.are.same({
        crlf = "\r\n\r\n--'()+_,-./:=?\r\n",
        empty = { filename = "empty.txt", content_type = "application/octet-stream", size = 0,
                  content = "", in_tmpdir = true },
        up = { filename = "u.txt", content_type = "text/plain", size = 17,
               content = "--" .. boundary .. "x", in_tmpdir = true },
      }, res:json().form)
    end)

    it(route .. ": a body sent one byte per write splits every boundary", function()
      local body = multipart("b0undary", {
        { "a", "x\r\ny" }, { "f", "\r\n--b0undar\r\n-", "f.txt" }, { "a", "z" },
      })
      local c = assert(t.connect(srv.port))
      assert(c:send("POST " .. route .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    .. "Content-Type: multipart/form-data; boundary=b0undary\r\n"
                    .. "Content-Length: " .. #body .. "\r\n\r\n"))
      for i = 1, #body do
        assert(c:send(body:sub(i, i)))
        t.sleep(0.001)
      end
      local res = assert(c:read_response(10))
      c:close()
      assert.are.same(200, res.status)
      assert.are.same({
        a = { "x\r\ny", "z" },
        f = { filename = "f.txt", content_type = "text/plain", size = 14,
              content = "\r\n--b0undar\r\n-", in_tmpdir = true },
      }, res:json().form)
    end)

    it(route .. ": a chunked multipart body", function()
      local body = multipart("bb", { { "f", ("0123456789"):rep(1000), "f.txt" } })
      local chunks = {}
      for i = 1, #body, 777 do
        local piece = body:sub(i, i + 776)
        chunks[#chunks + 1] = string.format("%x\r\n%s\r\n", #piece, piece)
      end
      local res = post(srv.port, route, "bb", table.concat(chunks) .. "0\r\n\r\n",
                       { ["Transfer-Encoding"] = "chunked" })
      assert.are.same(200, res.status)
      assert.are.same(10000, res:json().form.f.size)
    end)

    it(route .. ": the files are removed when the handler fails (500)", function()
      local fail = route == "/form" and "/fail" or "/fail-pooled"
      local res = post(srv.port, fail, "b", multipart("b", { { "f", "data", "f.txt" } }))
      assert.are.same(500, res.status)
      assert.are.same({ detail = "Internal Server Error" }, res:json())
    end)
  end

  it("the files are removed when the client leaves while the handler waits", function()
    local body = multipart("b", { { "f", "data", "f.txt" }, { "g", "more", "g.txt" } })
    local c = assert(t.connect(srv.port))
    assert(c:send("POST /wait HTTP/1.1\r\nHost: x\r\n"
                  .. "Content-Type: multipart/form-data; boundary=b\r\n"
                  .. "Content-Length: " .. #body .. "\r\n\r\n" .. body))
    assert.are.same(2, #wait_files(tmp, 2))
    c:close()
    -- after_each: none left
  end)

  it("the files are removed when the client leaves in the middle of the body", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("POST /big HTTP/1.1\r\nHost: x\r\n"
                  .. "Content-Type: multipart/form-data; boundary=b\r\n"
                  .. "Content-Length: 10000000\r\n\r\n"
                  .. "--b\r\nContent-Disposition: form-data; name=file; filename=x\r\n\r\n"
                  .. ("x"):rep(300000)))
    assert.are.same(1, #wait_files(tmp, 1))
    c:close()
  end)

  it("a handler may move a file away: it stays", function()
    local to = files .. "/moved.txt"
    local res = post(srv.port, "/move?to=" .. to, "b",
                     multipart("b", { { "file", "keep me", "k.txt" } }))
    assert.are.same(200, res.status)
    assert.are.same("keep me", t.read_file(to))
  end)

  it("a body over the server's --max-body is 413 on a route without max_body", function()
    local big = file("big2.bin", ("x"):rep(2 * 1024 * 1024))
    local code, body = curl("/form", "-F", "file=@" .. big)
    assert.are.same(413, code)
    assert.are.same('{"detail":"Request Entity Too Large"}', body)
  end)

  it("max_body: a Content-Length over the route's limit is 413 before 100 Continue", function()
    local c = assert(t.connect(srv.port))
    assert(c:send("POST /big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  .. "Content-Type: multipart/form-data; boundary=b\r\n"
                  .. "Content-Length: " .. (60 * 1024 * 1024 + 1) .. "\r\n\r\n"))
    local res = assert(c:read_response(5))
    assert.are.same(413, res.status)
    assert.is_true(c:is_closed(5))
    c:close()
  end)

  it("max_body: 100 Continue, then the body, within the route's limit", function()
    local body = multipart("b", { { "file", ("y"):rep(2 * 1024 * 1024), "y.bin" } })
    local c = assert(t.connect(srv.port))
    assert(c:send("POST /big HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  .. "Content-Type: multipart/form-data; boundary=b\r\nConnection: close\r\n"
                  .. "Content-Length: " .. #body .. "\r\n\r\n"))
    assert.are.same(100, assert(c:read_response(5)).status)
    assert(c:send(body))
    local res = assert(c:read_response(10))
    c:close()
    assert.are.same({ size = 2 * 1024 * 1024, on_disk = 2 * 1024 * 1024 }, res:json())
  end)

  it("text fields over 1 MiB in all are 413", function()
    local body = multipart("b", { { "a", ("t"):rep(600 * 1024) }, { "b", ("t"):rep(600 * 1024) } })
    local res = post(srv.port, "/big", "b", body)
    assert.are.same(413, res.status)
    assert.are.same({ detail = "Multipart text fields too large (1 MiB in all)" }, res:json())
  end)

  it("more than 1000 parts is 400", function()
    local parts = {}
    for i = 1, 1001 do parts[i] = { "p", "" } end
    local res = post(srv.port, "/form", "b", multipart("b", parts))
    assert.are.same(400, res.status)
    assert.are.same({ detail = "Too many parts in the multipart body (1000 at most)" },
                    res:json())
    table.remove(parts)
    assert.are.same(1000, #post(srv.port, "/form", "b", multipart("b", parts)):json().form.p)
  end)

  it("urlencoded forms still work, and other bodies are 415", function()
    local res = assert(t.request(srv.port, "POST", "/urlencoded", {
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }, body = "a=1&a=2" }))
    assert.are.same({ a = { "1", "2" } }, res:json())
    res = assert(t.request(srv.port, "POST", "/urlencoded", {
      headers = { ["Content-Type"] = "text/plain" }, body = "a=1" }))
    assert.are.same(415, res.status)
  end)

  for _, case in ipairs{
    { "no boundary", "multipart/form-data", "--b--\r\n",
      "Malformed multipart body: no boundary in its Content-Type" },
    { "missing final boundary", "multipart/form-data; boundary=b",
      "--b\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--b\r\n",
      "Malformed multipart body: missing the final boundary" },
    { "truncated", "multipart/form-data; boundary=b",
      "--b\r\nContent-Disposition: form-data; name=f; filename=f\r\n\r\nsome data",
      "Malformed multipart body: missing the final boundary" },
    { "a part without a name", "multipart/form-data; boundary=b",
      "--b\r\nContent-Disposition: form-data; filename=x\r\n\r\n1\r\n--b--",
      "Malformed multipart body: a part has no name in its Content-Disposition" },
    { "a part without Content-Disposition", "multipart/form-data; boundary=b",
      "--b\r\nContent-Type: text/plain\r\n\r\n1\r\n--b--",
      "Malformed multipart body: a part has no name in its Content-Disposition" },
    { "LF line ends", "multipart/form-data; boundary=b",
      "--b\nContent-Disposition: form-data; name=a\n\n1\n--b--\n",
      "Malformed multipart body: unexpected bytes after a boundary" },
    { "an empty body", "multipart/form-data; boundary=b", "",
      "Malformed multipart body: missing the final boundary" },
  } do
    it("malformed multipart is 400: " .. case[1], function()
      for _, route in ipairs{ "/form", "/pooled" } do
        local res = assert(t.request(srv.port, "POST", route, {
          headers = { ["Content-Type"] = case[2] }, body = case[3] }))
        assert.are.same(400, res.status)
        assert.are.same({ detail = case[4] }, res:json())
      end
    end)
  end

  for _, case in ipairs{ "zero", "fraction", "string" } do
    it("a bad max_body stops the app from loading: " .. case, function()
      local r = t.run({ "serve", "tests/apps/uploads", "--port", "0" },
                      { env = { UPLOADS_BAD = case }, timeout = 10 })
      assert.are.same(2, r.status)
      assert.matches("option max_body must be a positive integer number of bytes", r.stderr, 1,
                     true)
      assert.matches("app.lua:%d+", r.stderr)
    end)
  end
end)

describe("a server that stops", function()
  it("removes the files of the requests it drops", function()
    local tmp = t.tmpdir()
    local srv = t.server{ app = "tests/apps/uploads", env = { TMPDIR = tmp },
                          args = { "--graceful-timeout", "0.2" } }
    local body = multipart("b", { { "f", "data", "f.txt" } })
    local c = assert(t.connect(srv.port))
    assert(c:send("POST /wait HTTP/1.1\r\nHost: x\r\n"
                  .. "Content-Type: multipart/form-data; boundary=b\r\n"
                  .. "Content-Length: " .. #body .. "\r\n\r\n" .. body))
    assert.are.same(1, #wait_files(tmp, 1))
    assert(srv:signal("TERM"))
    assert.are.same(1, srv:wait(10))   -- it dropped the request
    c:close()
    assert.are.same({}, listing(tmp))
  end)
end)

describe("a 50 MB upload", function()
  it("streams to disk: the server's peak RSS stays within a few MB of idle", function()
    local tmp, dir = t.tmpdir(), t.tmpdir()
    local srv = t.server{ app = "tests/apps/uploads", env = { TMPDIR = tmp } }
    local big = dir .. "/big.bin"
    local mb = ("0123456789abcdef"):rep(65536)
    local f = assert(io.open(big, "wb"))
    for i = 1, 50 do f:write(mb:sub(i) .. mb:sub(1, i - 1)) end
    f:close()
    -- warm up: the first requests of a server allocate what every request reuses
    for _ = 1, 3 do
      assert.are.same(200, post(srv.port, "/big", "b",
                                multipart("b", { { "file", "warm", "w.txt" } })).status)
    end
    local before = vm(srv.pid, "VmHWM")
    for _, route in ipairs{ "/big", "/big-pooled" } do
      local r = t.run({ "-s", "-F", "file=@" .. big, "http://127.0.0.1:" .. srv.port .. route },
                      { bin = "curl", timeout = 120 })
      assert.are.same(52428800, require("cjson").decode(r.stdout).size)
    end
    local grew = vm(srv.pid, "VmHWM") - before
    assert.is_true(grew < 4096, "peak RSS grew by " .. grew .. " kB")
    assert.are.same({}, wait_files(tmp, 0))
    srv:stop()
  end)
end)
