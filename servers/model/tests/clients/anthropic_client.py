"""The official Anthropic Python SDK against the model service's Messages front door.

Usage: anthropic_client.py BASE_URL API_KEY, where BASE_URL is the service's `/api` (the SDK adds
`/v1/messages`). The service's providers are the scripted local servers of the tests: `priced`
answers "Hello, world" (12 tokens in, 5 out), `priced-tools` "Checking." and two parallel tool
calls, `midstream` fails after "Hel". The last request to reach a provider is the conversation
with tool results, which the caller checks upstream. Exits non-zero at the first surprise.
"""

import sys

import anthropic

base_url, api_key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


hi = [{"role": "user", "content": "hi"}]
answer = client.messages.create(model="priced", max_tokens=100, messages=hi)
check(answer.type == "message" and answer.role == "assistant", "a message")
check([b.type for b in answer.content] == ["text"] and answer.content[0].text == "Hello, world", "its text")
check(answer.stop_reason == "end_turn", "stop reason")
check(answer.usage.input_tokens == 12 and answer.usage.output_tokens == 5, "usage")

tools = [
    {"name": "get_weather", "description": "Weather of a city", "input_schema": {"type": "object"}},
    {"name": "get_time", "description": "Time in a zone", "input_schema": {"type": "object"}},
]
ask = [{"role": "user", "content": "weather and time?"}]
with client.messages.stream(model="priced-tools", max_tokens=100, messages=ask, tools=tools) as stream:
    streamed_text = "".join(stream.text_stream)
    final = stream.get_final_message()
check(streamed_text == "Checking.", "streamed text")
check([b.type for b in final.content] == ["text", "tool_use", "tool_use"], "a text block, then a block per call")
uses = [b for b in final.content if b.type == "tool_use"]
check([u.name for u in uses] == ["get_weather", "get_time"], "streamed parallel tool calls")
check(uses[0].input == {"city": "Paris", "days": 3}, "first call's input from many pieces")
check(uses[1].input == {"zone": "Asia/Tokyo"}, "second call's input")
check(all(u.id for u in uses) and uses[0].id != uses[1].id, "call ids")
check(final.stop_reason == "tool_use", "stop reason of a tool call")
check(final.usage.output_tokens > 0, "usage at the end of the stream")

events = [e.type for e in client.messages.create(model="priced", max_tokens=100, messages=hi, stream=True)]
check(events[0] == "message_start" and events[-1] == "message_stop", f"raw events in order ({events})")

try:
    with client.messages.stream(model="midstream", max_tokens=100, messages=hi) as stream:
        for _ in stream:
            pass
    check(False, "a failure mid-stream raises")
except anthropic.APIError as e:
    check(True, f"a failure mid-stream raises {type(e).__name__} ({e})")


# The calls answered, in Anthropic's shapes: tool_use blocks back, tool_result blocks in.
follow_up = ask + [
    {"role": "assistant", "content": [{"type": "text", "text": "Checking."}] + [
        {"type": "tool_use", "id": u.id, "name": u.name, "input": u.input} for u in uses]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"},
        {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "09:00"}]},
    ]},
]
answered = client.messages.create(model="priced", max_tokens=100, messages=follow_up, system="Be brief.")
check(answered.content[0].text == "Hello, world", "a conversation with tool results is answered")

for call, error, what in [
    (lambda: client.messages.create(model="no-such-model", max_tokens=10, messages=hi), anthropic.NotFoundError, "unknown model"),
    (lambda: client.messages.create(model="priced", max_tokens=10, messages=[]), anthropic.BadRequestError, "no messages"),
    (lambda: anthropic.Anthropic(base_url=base_url, api_key="isa_wrong", max_retries=0).messages.create(model="priced", max_tokens=10, messages=hi), anthropic.AuthenticationError, "bad key"),
]:
    try:
        call()
        check(False, f"{what} raises")
    except error as e:
        check(True, f"{what} raises {type(e).__name__} ({e.status_code})")
print("all ok")
