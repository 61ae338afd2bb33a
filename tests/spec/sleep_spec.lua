-- moonlet.sleep's sleepers share one timer and a heap by deadline (core/sched/sleep.c):
-- they wake in deadline order, ties in the order they slept, each no earlier than its own
-- deadline; a sleeper cut by a timeout leaves the heap (from wherever it is in it) and the
-- others keep their times.
local moonlet = require "moonlet"

-- Sleepers spawned in one loop turn share its clock (the loop's, as libuv timers do: it
-- moves once a turn): their deadlines are that turn's time plus their own, so the order they
-- wake in is known in advance, and none wakes before the turn's start + its own time.
-- Returns that start (a sleep(0) first: the turn starts now).
local function spawn_sleepers(list, woke)
  moonlet.sleep(0)
  local t0 = moonlet.now()
  for i, s in ipairs(list) do
    moonlet.spawn(function()
      moonlet.sleep(s)
      woke[#woke + 1] = { i = i, s = s, late = moonlet.now() - t0 - s }
    end)
  end
  return t0
end

-- the indexes of list in deadline order, ties in list order
local function expected_order(list)
  local idx = {}
  for i = 1, #list do idx[i] = i end
  table.sort(idx, function(a, b)
    if list[a] ~= list[b] then return list[a] < list[b] end
    return a < b
  end)
  return idx
end

describe("moonlet.sleep", function()
  it("wakes 3,000 sleepers in deadline order, ties in the order they slept", function()
    local list = {}
    for i = 1, 3000 do list[i] = (i * 37 % 61) * 0.002 end   -- 0 to 0.12 s, many ties
    local woke = {}
    spawn_sleepers(list, woke)
    moonlet.sleep(0.3)
    assert.are.same(#list, #woke)
    local order, early = {}, 0
    for k, w in ipairs(woke) do
      order[k] = w.i
      if w.late < -0.0015 then early = early + 1 end   -- the loop's clock is in whole ms
    end
    assert.are.same(expected_order(list), order)
    assert.are.same(0, early)
  end)

  it("takes a sleeper cut by a timeout out from anywhere in the heap", function()
    local list, woke, cut = {}, {}, {}
    for i = 1, 200 do list[i] = 0.02 + (i * 13 % 17) * 0.005 end
    spawn_sleepers(list, woke)
    -- every third one of 60 more sleeps 0.3 s under a 0.05 s timeout: cancelled mid-heap
    for i = 1, 60 do
      moonlet.spawn(function()
        local s = i % 3 == 0 and 0.3 or 0.005 * (i % 7)   -- 0 to 0.03 s: within the timeout
        local ok, err = moonlet.timeout(0.05, function()
          moonlet.sleep(s)
          return true
        end)
        cut[#cut + 1] = { i = i, ok = ok, err = err }
      end)
    end
    moonlet.sleep(0.2)
    assert.are.same(200, #woke)
    local order = {}
    for k, w in ipairs(woke) do order[k] = w.i end
    assert.are.same(expected_order(list), order)
    assert.are.same(60, #cut)
    for _, c in ipairs(cut) do
      if c.i % 3 == 0 then
        assert.are.same({ i = c.i, err = "timeout" }, { i = c.i, err = c.err })
      else
        assert.are.same({ i = c.i, ok = true }, { i = c.i, ok = c.ok })
      end
    end
    -- the cut sleepers are gone from the heap: new sleepers (on the tasks they left, which
    -- are reused) are not woken at the cut ones' deadlines
    local later = {}
    for i = 1, 40 do later[i] = 0.4 end
    woke = {}
    spawn_sleepers(later, woke)
    moonlet.sleep(0.5)
    assert.are.same(40, #woke)
    for _, w in ipairs(woke) do assert.is_true(w.late >= -0.0015, tostring(w.late)) end
  end)

  it("lets a sleep(0) started while sleepers wake wait for the next turn", function()
    local log = {}
    moonlet.spawn(function()
      moonlet.sleep(0.01)
      log[#log + 1] = "a"
      moonlet.sleep(0)
      log[#log + 1] = "a again"
    end)
    moonlet.spawn(function()
      moonlet.sleep(0.01)
      log[#log + 1] = "b"
    end)
    moonlet.sleep(0.05)
    assert.are.same({ "a", "b", "a again" }, log)
  end)
end)
