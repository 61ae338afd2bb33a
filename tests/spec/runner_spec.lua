-- `moonlet test`: busted inside moonlet's runtime, with moonlet's output handler.
-- Most checks run the binary on small spec files written to a temp dir.
local t = require "moonlet.testing"

local fmt = string.format

-- Writes each name → source into a fresh dir, runs `moonlet test args...` there.
-- Returns { status, stdout, stderr, dir }.
local function run_specs(files, args, env)
  local dir = t.tmpdir()
  for name, src in pairs(files) do t.write_file(dir .. "/" .. name, src) end
  local r = t.run(args or { "test", "." }, { cwd = dir, env = env, timeout = 30 })
  r.dir = dir
  return r
end

local function last_line(text)
  return text:match("([^\n]*)\n?$")
end

local MIXED = [[
describe("a", function()
  it("passes", function() assert.are.same({ 1 }, { 1 }) end)
  it("fails", function() assert.are.same({ x = 1 }, { x = 2 }) end)
  it("errors", function() local none; return none.field end)
end)
describe("b", function()
  lazy_setup(function() error("setup went wrong") end)
  it("never runs", function() end)
end)
]]

describe("moonlet test", function()
  it("gives specs a loop of their own: moonlet primitives block", function()
    local moonlet = require "moonlet"
    local t0 = moonlet.now()
    moonlet.sleep(0.05)
    assert.is_true(moonlet.now() - t0 >= 0.045)
    local a, b = moonlet.gather(function() moonlet.sleep(0.05) return 1 end,
                                function() moonlet.sleep(0.05) return 2 end)
    assert.are.same({ 1, 2 }, { a, b })
    assert.is_true(moonlet.now() - t0 < 0.2)
  end)

  it("prints a line per test and ends with exactly 'N passed, N failed'", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED })
    assert.matches("\nok %- a passes %(%d+ ms%)\n", r.stdout)
    assert.matches("\nnot ok %- a fails %(%d+ ms%)\n"
                   .. "    %./mixed_spec%.lua:3: Expected objects to be the same", r.stdout)
    assert.are.equal("1 passed, 3 failed", last_line(r.stdout))
    assert.are.equal(1, r.status)
  end)

  it("counts an error in a test as failed, with its traceback", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED })
    assert.matches("\nnot ok %- a errors %(%d+ ms%)\n    %./mixed_spec%.lua:4: attempt to index", r.stdout)
    assert.matches("stack traceback:", r.stdout)
  end)

  it("counts a failed setup as failed and skips its block", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED })
    assert.matches("\nnot ok %- b lazy_setup\n    %./mixed_spec%.lua:7: setup went wrong", r.stdout)
    assert.is_nil(r.stdout:find("never runs", 1, true))
  end)

  it("counts a spec file that does not load as failed", function()
    local r = run_specs({ ["broken_spec.lua"] = "it('x', function() end\n",
                          ["fine_spec.lua"] = "it('fine', function() end)\n" })
    assert.matches("not ok %- %./broken_spec%.lua\n    %./broken_spec%.lua:2: '%)' expected", r.stdout)
    assert.are.equal("1 passed, 1 failed", last_line(r.stdout))
    assert.are.equal(1, r.status)
  end)

  it("exits 0 when nothing failed, and says skipped only when tests are pending", function()
    local r = run_specs({ ["ok_spec.lua"] = "it('one', function() end)\nit('two', function() end)\n" })
    assert.are.equal("2 passed, 0 failed", last_line(r.stdout))
    assert.are.equal(0, r.status)
    r = run_specs({ ["p_spec.lua"] = "it('one', function() end)\npending('later')\n" })
    assert.matches("\nok %- later # SKIP\n", r.stdout)
    assert.are.equal("1 passed, 0 failed, 1 skipped", last_line(r.stdout))
    assert.are.equal(0, r.status)
  end)

  it("runs only the tests MOONLET_TEST_FILTER matches", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED }, nil, { MOONLET_TEST_FILTER = "a pass" })
    assert.are.equal(fmt("# ./mixed_spec.lua\nok - a passes (%s ms)\n1 passed, 0 failed\n",
                         r.stdout:match("%((%d+) ms%)")), r.stdout)
    assert.are.equal(0, r.status)
  end)

  it("fails the run on a MOONLET_TEST_FILTER that is not a Lua pattern", function()
    local r = run_specs({ ["ok_spec.lua"] = "it('one', function() end)\n" }, nil,
                        { MOONLET_TEST_FILTER = "[" })
    assert.matches("malformed pattern", r.stdout)
    assert.are.equal("0 passed, 1 failed", last_line(r.stdout))
    assert.are.equal(1, r.status)
  end)

  it("takes busted's options: tags", function()
    local r = run_specs({ ["tags_spec.lua"] = "it('slow one #slow', function() end)\n"
                                              .. "it('quick one', function() end)\n" },
                        { "test", "--exclude-tags=slow", "." })
    assert.matches("ok %- quick one", r.stdout)
    assert.are.equal("1 passed, 0 failed", last_line(r.stdout))
  end)

  it("runs tests/spec when no PATH is given, options or not", function()
    local files = { ["tests/spec/here_spec.lua"] = "it('found by default', function() end)\n",
                    ["other_spec.lua"] = "it('not this one', function() end)\n" }
    local r = run_specs(files, { "test" })
    assert.matches("ok %- found by default", r.stdout)
    assert.are.equal("1 passed, 0 failed", last_line(r.stdout))
    r = run_specs(files, { "test", "-o", "TAP" })
    assert.are.equal("ok 1 - found by default\n1..1\n", r.stdout)
  end)

  it("finds moonlet.testing from any directory", function()
    local r = run_specs({ ["uses_spec.lua"] = [[
      local t = require "moonlet.testing"
      it("has the helpers", function() assert.is_function(t.server) end)
    ]] })
    assert.are.equal("1 passed, 0 failed", last_line(r.stdout))
  end)

  it("writes TAP with -o TAP", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED }, { "test", "-o", "TAP", "." })
    assert.matches("^ok 1 %- a passes\nnot ok 2 %- a fails\n", r.stdout)
    assert.matches("\nnot ok 4 %- b lazy_setup\n.*\n1%.%.4\n$", r.stdout)
    assert.are.equal(1, r.status)
  end)

  it("writes JUnit XML with -o junit -Xoutput FILE", function()
    local r = run_specs({ ["mixed_spec.lua"] = MIXED },
                        { "test", "-o", "junit", "-Xoutput", "report.xml", "." })
    local xml = assert(t.read_file(r.dir .. "/report.xml"))
    assert.matches("<testsuites[^>]* tests='3'", xml)
    assert.matches("<testcase[^>]* name='a passes'", xml)
    assert.matches("<failure>", xml)
  end)

  it("says in one line on stderr when an option is unknown", function()
    local r = run_specs({}, { "test", "--bogus" })
    assert.are.equal("moonlet test: error: unknown/bad flag: --bogus; re-run with --help for usage.\n",
                     r.stderr)
    assert.are.equal(1, r.status)
  end)

  it("says in one line that lua-busted is missing", function()
    -- hide busted in a mount namespace of the command's own (root only)
    local probe = t.run({ "-m", "true" }, { bin = "unshare" })
    if probe.status ~= 0 then
      pending("needs unshare -m (root): " .. probe.stderr)
      return
    end
    local bin = os.getenv("MOONLET_BIN") or "build/moonlet"
    local r = t.run({ "-m", "sh", "-c", "mount -t tmpfs none /usr/share/lua/5.1/busted && exec \"$0\" test", bin },
              { bin = "unshare", timeout = 20 })
    assert.are.equal("moonlet: lua-busted is not installed (apt-get install lua-busted,"
                     .. " or scripts/deps.sh test)\n", r.stderr)
    assert.are.equal("", r.stdout)
    assert.are.equal(2, r.status)
  end)
end)
