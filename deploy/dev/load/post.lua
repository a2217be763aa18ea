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

-- Counting answers, shared by the scripts beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "count.lua")

function response(status, headers, body)
  count(status == expect and (not contains or string.find(body, contains, 1, true)))
end
