-- wrk script: one OpenAI chat completion per request. BODY (the JSON request) and KEY (the
-- bearer credential) come from the environment; an answer that is not a 200 with a completion
-- (or, streamed, without its [DONE]) counts as bad.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "none")
wrk.body = os.getenv("BODY")

-- Counting answers, shared by the scripts beside this one.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "count.lua")

function response(status, headers, body)
  count(status == 200 and (string.find(body, "Hello, world", 1, true) or string.find(body, "[DONE]", 1, true)))
end
