-- moonlet.testing.process, with /bin/sh standing in for the binary: start, wait for
-- "listening on", logs, signals, stop; files; and what a spec file leaves behind.
local process = require "moonlet.testing.process"

describe("processes (with /bin/sh as the binary)", function()
  local dir, fake

  lazy_setup(function()
    dir = process.tmpdir()
    fake = dir .. "/fake-server"
    process.write_file(fake, table.concat({
      "#!/bin/sh",
      'echo "args: $*" >&2',
      'if [ "$2" = broken ]; then echo "error: app broken not found" >&2; exit 2; fi',
      'echo "listening on http://127.0.0.1:4242"',
      'if [ "$2" = sleeper ]; then exec sleep 30; fi',
      "trap 'echo got TERM >&2; exit 0' TERM",
      "while :; do sleep 0.01; done",
    }, "\n") .. "\n")
    os.execute("chmod +x " .. process.shell_quote(fake))
  end)

  it("run returns status, stdout and stderr", function()
    local r = process.run({ "-c", 'echo out; echo "err $FOO" >&2; exit 3' },
                          { bin = "/bin/sh", env = { FOO = "it's" } })
    assert.are.same({ status = 3, stdout = "out\n", stderr = "err it's\n" }, r)
  end)

  it("server waits for 'listening on' and stops with TERM", function()
    local srv = process.server{ bin = fake, app = "apps/x", args = { "--log-level", "info" } }
    assert.are.same({ "127.0.0.1", 4242, "http://127.0.0.1:4242" }, { srv.host, srv.port, srv.url })
    assert.matches("serve apps/x %-%-host 127%.0%.0%.1 %-%-port 0 %-%-log%-level info",
                   (srv:wait_log("^args:")))
    assert.are.same(nil, srv:wait(0.02))
    assert.are.same(0, srv:stop())
    assert.are.same(0, srv:stop())
    assert.matches("got TERM", srv:stderr())
    assert.error_matches(function() srv:wait_log("never", 0.05) end, "exited")
  end)

  it("INT reaches the binary (sh would ignore it in background jobs)", function()
    local srv = process.server{ bin = fake, app = "sleeper" }
    assert.is_truthy(srv:signal("INT"))
    assert.are.same(130, srv:wait(2))
    assert.are.same({ nil, "exited" }, { srv:signal("TERM") })
    srv:stop()
  end)

  it("server raises with stderr when the start fails; start does not", function()
    assert.error_matches(function() process.server{ bin = fake, app = "broken" } end,
                         "app broken not found")
    local p = process.start{ bin = fake, app = "broken" }
    assert.are.same(false, p.listening)
    assert.are.same(2, p:wait(2))
    assert.matches("app broken not found", p:stderr())
    p:stop()
  end)

  it("wait_log times out with the log tail", function()
    local srv = process.server{ bin = fake, app = "x" }
    local mark = srv:mark()
    assert.error_matches(function() srv:wait_log("nothing like this", 0.03, mark) end,
                         "timeout.*args:")
    srv:stop()
  end)
end)

describe("files", function()
  it("write_file, read_file, tmpdir", function()
    local d = process.tmpdir()
    local p = process.write_file(d .. "/a/b/c.txt", "x\0y")
    assert.are.same("x\0y", process.read_file(p))
    local data, err = process.read_file(d .. "/missing")
    assert.are.same(nil, data)
    assert.matches("No such file", err)
  end)
end)

describe("under moonlet test", function()
  it("stops what a spec file leaves running and removes its temp dirs when the file ends", function()
    local dir = process.tmpdir()
    process.write_file(dir .. "/fake", "#!/bin/sh\necho listening on http://127.0.0.1:1\nexec sleep 30\n")
    os.execute("chmod +x " .. process.shell_quote(dir .. "/fake"))
    process.write_file(dir .. "/leaves_spec.lua", [[
      local process = require "moonlet.testing.process"
      it("leaves a process and a temp dir", function()
        local p = process.server{ bin = "./fake" }
        process.write_file("pid", tostring(p.pid))
        process.write_file("tmp", process.tmpdir())
      end)
    ]])
    local r = process.run({ "test", "leaves_spec.lua" }, { cwd = dir, timeout = 20 })
    assert.are.same(0, r.status, r.stdout .. r.stderr)
    local pid = process.read_file(dir .. "/pid")
    assert.matches("\n# stopping leftover process " .. pid .. ": ", r.stdout)
    assert.matches("\n1 passed, 0 failed\n$", r.stdout)
    assert.are_not.same(0, os.execute("kill -0 " .. pid .. " 2>/dev/null"))
    assert.is_nil(io.open(process.read_file(dir .. "/tmp")))
  end)
end)
