-- wrk script: one MCP tools/call per request. TOOL and ARGS come from the environment;
-- PROTOCOL is 2026-07-28 (stateless, the default) or 2025-11-25 (without a session: the server
-- must run with --stateless, and answers as SSE). With QUERIES (a queries file, JSON lines with
-- a "query" and a "gold"), each request calls TOOL with the next query of the file as its
-- `query` argument (ARGS are then ignored), each thread starting at its own place in the file.
-- REPEAT=n sends each query n times in a row before the next: with n near the connections of a
-- thread, a thread's connections ask for the same new query at once (a popular request).
local tool = os.getenv("TOOL") or "current_time"
local args = os.getenv("ARGS") or "{}"
local protocol = os.getenv("PROTOCOL") or "2026-07-28"
local repeat_each = math.max(1, tonumber(os.getenv("REPEAT") or "1"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = protocol

local function body(arguments)
  if protocol == "2026-07-28" then
    return '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. arguments ..
      ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},' ..
      '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}}}'
  end
  return '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. arguments .. '}}'
end

if protocol == "2026-07-28" then
  wrk.headers["Mcp-Method"] = "tools/call"
  wrk.headers["Mcp-Name"] = tool
end
wrk.body = body(args)

local bodies, next_body, sent = {}, 1, 0
function init()
  local queries = os.getenv("QUERIES")
  if not queries then
    return
  end
  for line in io.lines(queries) do
    -- The query's JSON string as written, escapes and all: it is pasted into JSON as it is.
    local query = line:match('"query":%s*(".-"),%s*"gold"')
    if query then
      table.insert(bodies, body('{"query":' .. query .. ',"top_k":5}'))
    end
  end
  assert(#bodies > 0, "no queries in " .. queries)
  -- A table's address differs per thread: threads start apart in the file.
  next_body = tonumber(tostring({}):match("0x(%x+)"), 16) % #bodies + 1
end

function request()
  if #bodies == 0 then
    return wrk.format()
  end
  local request_body = bodies[next_body]
  sent = sent + 1
  if sent % repeat_each == 0 then
    next_body = next_body % #bodies + 1
  end
  return wrk.format(nil, nil, nil, request_body)
end

-- Counting answers, shared by the scripts beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "count.lua")

function response(status, headers, body)
  count(status == 200 and string.find(body, '"result"') and not string.find(body, '"isError":true'))
end
