-- wrk script: the same POST every time. BODY, CONTENT_TYPE and AUTHORIZATION come from the
-- environment; an answer is good when its status is EXPECT (default 200) and, when CONTAINS
-- is set, its body holds that text.
wrk.method = "POST"
wrk.body = os.getenv("BODY") or ""
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
wrk.headers["Accept"] = "application/json"
if os.getenv("AUTHORIZATION") then
  wrk.headers["Authorization"] = os.getenv("AUTHORIZATION")
end
local expect = tonumber(os.getenv("EXPECT") or "200")
local contains = os.getenv("CONTAINS")

-- One Lua state per thread: `done` adds up what each thread counted (see call.lua).
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
answered = 0
function response(status, headers, body)
  answered = answered + 1
  if status ~= expect or (contains and not string.find(body, contains, 1, true)) then
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
