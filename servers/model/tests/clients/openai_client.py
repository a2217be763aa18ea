"""The official OpenAI Python SDK against the model service.

Usage: openai_client.py BASE_URL API_KEY. The service's providers are the scripted local
servers of the tests: `priced` answers "Hello, world" (12 tokens in, 5 out), `priced-tools` two
parallel tool calls, `midstream` fails after "Hel"; `text-embedding-3-small` gives the vector
[len, first byte, 1.0] of each text. Exits non-zero at the first surprise.
"""

import json
import sys

import openai

base_url, api_key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


ids = [m.id for m in client.models.list()]
check("priced" in ids and "text-embedding-3-small" in ids, f"models.list names the models ({ids})")

answer = client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}])
check(answer.choices[0].message.content == "Hello, world", "chat answer")
check(answer.choices[0].finish_reason == "stop", "finish reason")
check(answer.usage.prompt_tokens == 12 and answer.usage.completion_tokens == 5, "usage")

tools = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
calls = {}
text = ""
usage = None
stream = client.chat.completions.create(
    model="priced-tools",
    messages=[{"role": "user", "content": "weather and time?"}],
    tools=tools,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for choice in chunk.choices:
        text += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                entry["id"] = call.id
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
check(text == "Checking.", "streamed text")
check([calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"], "streamed parallel tool calls")
check(json.loads(calls[0]["arguments"]) == {"city": "Paris", "days": 3}, "first call's arguments from many pieces")
check(json.loads(calls[1]["arguments"]) == {"zone": "Asia/Tokyo"}, "second call's arguments")
check(all(c["id"] for c in calls.values()), "call ids")
check(usage is not None and usage.total_tokens == 17, "usage chunk")

with client.chat.completions.stream(model="priced-tools", messages=[{"role": "user", "content": "x"}], tools=tools) as helper:
    final = helper.get_final_completion()
check([c.function.name for c in final.choices[0].message.tool_calls] == ["get_weather", "get_time"], "the SDK's stream helper assembles the calls")

try:
    for _ in client.chat.completions.create(model="midstream", messages=[{"role": "user", "content": "x"}], stream=True):
        pass
    check(False, "a failure mid-stream raises")
except openai.APIError as e:
    check("failed" in str(e) or "upstream" in str(e), f"a failure mid-stream raises APIError ({e})")

def vector(text):
    return [float(len(text)), float(text.encode()[0]), 1.0]

by_default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "bb"])
check([d.embedding for d in by_default.data] == [vector("alpha"), vector("bb")], "embeddings (the SDK asks for base64)")
as_floats = client.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
check(as_floats.data[0].embedding == vector("alpha"), "embeddings as floats")

images = client.images.generate(model="gpt-image-1", prompt="a red fox", n=2)
check(len(images.data) == 2 and images.data[0].url.startswith("https://"), "images")

for call, error, what in [
    (lambda: client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}]), openai.NotFoundError, "unknown model"),
    (lambda: client.chat.completions.create(model="priced", messages=[]), openai.BadRequestError, "no messages"),
    (lambda: openai.OpenAI(base_url=base_url, api_key="isa_wrong", max_retries=0).models.list(), openai.AuthenticationError, "bad key"),
]:
    try:
        call()
        check(False, f"{what} raises")
    except error as e:
        check(True, f"{what} raises {type(e).__name__} ({e.status_code})")
print("all ok")
