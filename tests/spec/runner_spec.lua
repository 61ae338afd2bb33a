-- `moonlet test` gives specs a loop of their own: moonlet primitives block the runner.
describe("runner", function()
  it("has moonlet primitives that block", function()
    local moonlet = require "moonlet"
    local t0 = moonlet.now()
    moonlet.sleep(0.05)
    ok(moonlet.now() - t0 >= 0.045)
    local a, b = moonlet.gather(function() moonlet.sleep(0.05) return 1 end, function() moonlet.sleep(0.05) return 2 end)
    eq({a, b}, {1, 2})
    ok(moonlet.now() - t0 < 0.2)
  end)
end)
