-- What every wrk script here shares: counting answers and bad answers. wrk runs a script in one
-- Lua state per thread, so each thread counts in its own state and `done` (run in the main
-- state) adds up what every thread counted. A script loads this file and calls
-- `count(good)` from its `response`.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
answered = 0
function count(good)
  answered = answered + 1
  if not good then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad, total = 0, 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + thread:get("bad")
    total = total + thread:get("answered")
  end
  io.write(string.format("p50 %.2f ms  p99 %.2f ms  responses %d  bad responses %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, total, total_bad))
end
