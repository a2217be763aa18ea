-- wrk script: one OpenAI chat completion per request. BODY (the JSON request) and KEY (the
-- bearer credential) come from the environment; an answer that is not a 200 with a completion
-- (or, streamed, without its [DONE]) counts as bad.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "none")
wrk.body = os.getenv("BODY")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
answered = 0
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or not (string.find(body, "Hello, world", 1, true) or string.find(body, "[DONE]", 1, true)) then
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
