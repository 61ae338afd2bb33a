-- app:static through the real binary (tests/apps/static) and curl: types, HEAD,
-- validators (304), ranges (206, 416), index files and redirects, traversal attempts,
-- symlinks, a large file, and what does not apply (middleware, other methods).
local t = require "moonlet.testing"

local function sh(cmd)
  local ok = os.execute(cmd)
  assert(ok == true or ok == 0, "failed: " .. cmd)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

describe("static files", function()
  local srv, dir, base
  lazy_setup(function()
    -- a directory made now: symlinks in and out of it, a large file
    dir = t.tmpdir()
    sh("mkdir -p " .. dir .. "/root/in " .. dir .. "/outside")
    t.write_file(dir .. "/secret.txt", "secret\n")
    t.write_file(dir .. "/outside/x.txt", "outside\n")
    t.write_file(dir .. "/root/inside.txt", "inside\n")
    t.write_file(dir .. "/root/in/deep.txt", "deep\n")
    sh("cd " .. dir .. "/root && ln -s inside.txt link_in && ln -s ../secret.txt link_out"
       .. " && ln -s ../outside dir_out && ln -s /etc/hostname abs_out && ln -s in dir_in")
    sh("head -c 20000000 /dev/urandom > " .. dir .. "/root/big.bin")
    srv = t.server{ app = "tests/apps/static", env = { STATIC_EXTRA = dir .. "/root" } }
    base = "http://127.0.0.1:" .. srv.port
  end)
  lazy_teardown(function() srv:stop() end)

  local function get(path, headers, method)
    return assert(t.request(srv.port, method or "GET", path, { headers = headers }))
  end

  local function curl(...)
    local r = t.run({ "-s", ... }, { bin = "curl" })
    assert.are.same(0, r.status, r.stderr)
    return r.stdout
  end

  it("serves files with their type, charset for text, caching headers", function()
    local cases = {
      { "/static/style.css", "text/css; charset=utf-8", "body { color: #333; }\n" },
      { "/static/app.js", "text/javascript; charset=utf-8", 'console.log("hi");\n' },
      { "/static/data.json", "application/json; charset=utf-8", '{"a": 1}\n' },
      { "/static/notes.xyzunknown", "application/octet-stream", "no extension we know\n" },
      { "/static/logo.png", "image/png", read("tests/apps/static/public/logo.png") },
    }
    for _, c in ipairs(cases) do
      local res = get(c[1])
      assert.are.same(200, res.status)
      assert.are.same(c[2], res.headers["content-type"])
      assert.are.same(c[3], res.body)
      assert.are.same(tostring(#c[3]), res.headers["content-length"])
      assert.are.same("bytes", res.headers["accept-ranges"])
      assert.are.same("public, max-age=3600", res.headers["cache-control"])
      assert.matches('^"[0-9a-f]+%-[0-9a-f]+"$', res.headers["etag"])
      assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$",
                     res.headers["last-modified"])
    end
    assert.is_nil(get("/plain/style.css").headers["cache-control"])   -- no max_age
  end)

  it("answers index.html for the mount and its subdirectories, redirects to the slash",
     function()
    local res = get("/static/")
    assert.are.same(200, res.status)
    assert.are.same("text/html; charset=utf-8", res.headers["content-type"])
    assert.matches("static index", res.body)
    assert.matches("sub index", get("/static/sub/").body)
    res = get("/static/sub?x=1")
    assert.are.same(301, res.status)
    assert.are.same("/static/sub/?x=1", res.headers["location"])
    assert.are.same("/static/", get("/static").headers["location"])
    assert.are.same("sub index", curl("-L", base .. "/static/sub"):match("sub index"))
  end)

  it("is 404 for a directory without index, with index = false, a file with a slash",
     function()
    for _, p in ipairs{ "/static/docs/", "/plain/", "/plain/sub/", "/plain", "/plain/sub",
                        "/static/style.css/", "/static/nope.css", "/static/sub/nope" } do
      local res = get(p)
      assert.are.same(404, res.status, p)
      assert.are.same({ detail = "Not Found" }, res:json())
    end
    assert.are.same(200, get("/static/docs/readme.md").status)
  end)

  it("answers HEAD with the headers of GET and no body", function()
    local c = t.connect(srv.port)
    c:send("HEAD /static/style.css HTTP/1.1\r\nHost: x\r\n\r\n"
           .. "GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n")
    local head = assert(c:read_response(5, { head = true }))
    local res = assert(c:read_response(5))
    c:close()
    assert.are.same(200, head.status)
    assert.are.same("", head.body)
    assert.are.same("22", head.headers["content-length"])
    assert.are.same("text/css; charset=utf-8", head.headers["content-type"])
    assert.are.same('console.log("hi");\n', res.body)   -- the connection went on
  end)

  it("answers 304 to If-None-Match and If-Modified-Since", function()
    local res = get("/static/style.css")
    local etag, modified = res.headers["etag"], res.headers["last-modified"]
    for _, inm in ipairs{ etag, "W/" .. etag, '"nope", ' .. etag, "*" } do
      local r = get("/static/style.css", { ["If-None-Match"] = inm })
      assert.are.same(304, r.status, inm)
      assert.are.same("", r.body)
      assert.are.same(etag, r.headers["etag"])
      assert.are.same("public, max-age=3600", r.headers["cache-control"])
    end
    assert.are.same(200, get("/static/style.css", { ["If-None-Match"] = '"other"' }).status)
    assert.are.same(304, get("/static/style.css", { ["If-Modified-Since"] = modified }).status)
    assert.are.same(200, get("/static/style.css",
                             { ["If-Modified-Since"] = "Sun, 06 Nov 1994 08:49:37 GMT" }).status)
    -- If-None-Match wins over If-Modified-Since
    assert.are.same(200, get("/static/style.css", { ["If-None-Match"] = '"other"',
                                                     ["If-Modified-Since"] = modified }).status)
    -- curl: -z (If-Modified-Since from a file's time) and --etag-compare
    local file = "tests/apps/static/public/style.css"
    assert.are.same("304", curl("-o", "/dev/null", "-w", "%{http_code}", "-z", file,
                                base .. "/static/style.css"))
    local etags = t.tmpdir() .. "/etag"
    curl("-o", "/dev/null", "--etag-save", etags, base .. "/static/style.css")
    assert.are.same("304", curl("-o", "/dev/null", "-w", "%{http_code}", "--etag-compare",
                                etags, base .. "/static/style.css"))
  end)

  it("answers a single Range with 206, an unsatisfiable one with 416", function()
    local all = "0123456789abcdefghijklmnopqrstuvwxyz"
    local cases = {
      { "bytes=0-9", 206, "0123456789", "bytes 0-9/36" },
      { "bytes=30-", 206, "uvwxyz", "bytes 30-35/36" },
      { "bytes=-6", 206, "uvwxyz", "bytes 30-35/36" },
      { "bytes=-100", 206, all, "bytes 0-35/36" },
      { "bytes=10-1000", 206, all:sub(11), "bytes 10-35/36" },
      { "bytes=36-", 416, nil, "bytes */36" },
      { "bytes=-0", 416, nil, "bytes */36" },
      { "bytes=0-1,5-6", 200, all, nil },     -- several ranges: the whole file
      { "bytes=5-2", 200, all, nil },         -- invalid: ignored
      { "lines=1-2", 200, all, nil },
    }
    for _, c in ipairs(cases) do
      local res = get("/static/range.txt", { Range = c[1] })
      assert.are.same(c[2], res.status, c[1])
      if c[3] then assert.are.same(c[3], res.body, c[1]) end
      assert.are.same(c[4], res.headers["content-range"], c[1])
    end
    -- If-Range: the range applies to the version it names only
    local etag = get("/static/range.txt").headers["etag"]
    assert.are.same(206, get("/static/range.txt", { Range = "bytes=0-1", ["If-Range"] = etag })
                          .status)
    assert.are.same(200, get("/static/range.txt", { Range = "bytes=0-1",
                                                     ["If-Range"] = '"old"' }).status)
    assert.are.same("56789", curl("-r", "5-9", base .. "/static/range.txt"))
  end)

  it("is 404 for every way out of the directory", function()
    local c = t.connect(srv.port)
    for _, p in ipairs{ "/static/../app.lua", "/static/%2e%2e/app.lua", "/static/..%2fapp.lua",
                        "/static/%2e%2e%2fapp.lua", "/static/a%00b", "/static/style.css%00.png",
                        "/static/sub%2f..%2f..%2fapp.lua", "/static/sub/../../app.lua",
                        "/static/sub/%2e%2e/%2e%2e/app.lua", "/static/..%5capp.lua",
                        "/static/sub\\..\\style.css", "/static//etc/passwd",
                        "/static/./style.css", "/static/%zz", "/static/sub%2fpage.txt",
                        "/extra/link_out", "/extra/dir_out/x.txt", "/extra/abs_out",
                        "/extra/dir_out/" } do
      c:send("GET " .. p .. " HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = assert(c:read_response(5))
      assert.are.same(404, res.status, p)
      assert.are.same('{"detail":"Not Found"}', res.body, p)
    end
    c:close()
    -- curl normalises "..", so ask it not to
    assert.are.same("404", curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}",
                                base .. "/static/../app.lua"))
  end)

  it("follows symlinks that stay inside the directory", function()
    assert.are.same("inside\n", get("/extra/link_in").body)
    assert.are.same("deep\n", get("/extra/dir_in/deep.txt").body)
    assert.are.same("inside\n", get("/extra/inside.txt").body)
  end)

  it("sends a large file intact (curl, sha256)", function()
    local want = t.run({ "-c", "sha256sum < " .. dir .. "/root/big.bin" }, { bin = "sh" })
    local got = t.run({ "-c", "curl -s " .. base .. "/extra/big.bin | sha256sum" },
                      { bin = "sh" })
    assert.are.same(want.stdout, got.stdout)
    -- and a range of it
    local part = t.run({ "-c", "curl -s -r 1000000-2999999 " .. base
                         .. "/extra/big.bin | sha256sum" }, { bin = "sh" })
    local slice = t.run({ "-c", "tail -c +1000001 " .. dir .. "/root/big.bin | head -c 2000000"
                          .. " | sha256sum" }, { bin = "sh" })
    assert.are.same(slice.stdout, part.stdout)
  end)

  -- descriptors the server holds open (the file and the socket's duplicate of a transfer)
  local function fds(pid)
    local p = io.popen("ls /proc/" .. pid .. "/fd | wc -l")
    local n = tonumber(p:read("*a"))
    p:close()
    return n
  end

  local function wait_fds(pid, at_most)
    for _ = 1, 100 do
      if fds(pid) <= at_most then return end
      t.sleep(0.05)
    end
    assert.are.same(at_most, fds(pid))
  end

  it("keeps serving when a client leaves in the middle of a large file", function()
    local before = fds(srv.pid)
    for _ = 1, 3 do
      local c = t.connect(srv.port)
      c:send("GET /extra/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
      assert(c:recv(5))
      c:close()
    end
    local mark = srv:mark()
    assert.are.same("inside\n", get("/extra/inside.txt").body)
    srv:wait_log("GET /extra/inside.txt 200", 5, mark)
    wait_fds(srv.pid, before)   -- nothing of the three transfers stays open
  end)

  it("answers pipelined requests in order around a large file, on one connection", function()
    local big = read(dir .. "/root/big.bin")
    local c = t.connect(srv.port)
    c:send("GET /extra/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
           .. "GET /extra/inside.txt HTTP/1.1\r\nHost: x\r\n\r\n"
           .. "GET /extra/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=5-9\r\n\r\n"
           .. "HEAD /extra/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
           .. "GET /extra/big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=19999990-\r\n\r\n"
           .. "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    local res = assert(c:read_response(20))
    assert.are.same(200, res.status)
    assert.are.same(#big, #res.body)
    assert.is_true(res.body == big, "the body differs from the file")
    res = assert(c:read_response(5))
    assert.are.same("inside\n", res.body)
    res = assert(c:read_response(5))
    assert.are.same({ 206, big:sub(6, 10) }, { res.status, res.body })
    res = assert(c:read_response(5, { head = true }))
    assert.are.same({ 200, tostring(#big), "" },
                    { res.status, res.headers["content-length"], res.body })
    res = assert(c:read_response(5))
    assert.are.same({ 206, big:sub(19999991) }, { res.status, res.body })
    res = assert(c:read_response(5))
    assert.are.same({ message = "hello" }, res:json())
    c:close()
  end)

  it("drops a client that stops reading a large file, and lets the file go", function()
    local slow = t.server{ app = "tests/apps/static", args = { "--header-timeout", "1" },
                           env = { STATIC_EXTRA = dir .. "/root" } }
    local before = fds(slow.pid)
    local c = t.connect(slow.port)
    c:send("GET /extra/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    assert(c:recv(5))   -- then reads no more
    slow:wait_log("the client stopped reading its response", 6)
    wait_fds(slow.pid, before)
    c:close()
    slow:stop()
  end)

  it("answers GET and HEAD only; routes win over the mount; middleware do not run", function()
    local res = get("/static/style.css", nil, "POST")
    assert.are.same(405, res.status)
    assert.are.same("GET, HEAD", res.headers["allow"])
    res = get("/static/api")
    assert.are.same({ from = "lua" }, res:json())
    assert.are.same("ran", res.headers["x-middleware"])
    assert.is_nil(get("/static/style.css").headers["x-middleware"])
  end)

  it("refuses a bad mount at load, naming the problem (exit 2)", function()
    local cases = {
      missing = "bad argument #2 to 'static' %(.*no%-such%-dir: No such file",
      file = "bad argument #2 to 'static' %(.*app.lua: not a directory",
      prefix = "bad argument #1 to 'static' %(a prefix starts with '/'",
      option = "unknown option 'maxage'",
      twice = "mounted at /static already",
    }
    for bad, pattern in pairs(cases) do
      local r = t.run({ "serve", "tests/apps/static", "--port", "0" },
                      { env = { STATIC_BAD = bad } })
      assert.are.same(2, r.status, bad)
      assert.matches(pattern, r.stderr)
      assert.matches("app.lua:%d+", r.stderr)
    end
  end)
end)
