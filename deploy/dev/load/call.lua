-- wrk script: one MCP tools/call per request. TOOL and ARGS come from the environment;
-- PROTOCOL is 2026-07-28 (stateless, the default) or 2025-11-25 (without a session: the server
-- must run with --stateless, and answers as SSE).
local tool = os.getenv("TOOL") or "current_time"
local args = os.getenv("ARGS") or "{}"
local protocol = os.getenv("PROTOCOL") or "2026-07-28"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = protocol
if protocol == "2026-07-28" then
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args ..
    ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},' ..
    '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}}}'
else
  wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args .. '}}'
end

-- wrk runs this script in one Lua state per thread: each thread counts in its own state, and
-- `done` (run in the main state) adds up what every thread counted.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

bad = 0
answered = 0
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or not string.find(body, '"result"') or string.find(body, '"isError":true') then
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
