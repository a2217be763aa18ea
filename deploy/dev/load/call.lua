-- wrk script: a stateless (2026-07-28) MCP request. TOOL and ARGS come from the environment.
local tool = os.getenv("TOOL") or "current_time"
local args = os.getenv("ARGS") or "{}"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = tool
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args ..
  ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},' ..
  '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}}}'

local bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"') or string.find(body, '"isError":true') then
    bad = bad + 1
  end
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.2f ms  p99 %.2f ms  bad responses %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, bad))
end
