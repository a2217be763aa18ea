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

-- Counting answers, shared by the scripts beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "count.lua")

function response(status, headers, body)
  count(status == 200 and string.find(body, '"result"') and not string.find(body, '"isError":true'))
end
