"""Drives an MCP server with the official Python SDK (mcp==2.3.0) and prints what it saw as JSON.

usage: [MCP_BEARER=token] mcp_client.py URL MODE SCENARIO [ARGS_JSON]
  MODE      legacy (2025-11-25, sessions) or 2026-07-28 (stateless)
  SCENARIO  list              -> {"protocol", "tools": [names of every page], "pages"}
            call NAME         -> {"is_error", "text", "structured"} for tools/call NAME ARGS_JSON
            discover QUERY    -> discover_tools(QUERY), then call_tool on the best tool with ARGS_JSON
            ask TEXT          -> uploads TEXT as a file, summarizes it (the sampling callback answers),
                                 deletes it twice: declined, then confirmed (the elicitation callback
                                 answers); {"summary", "declined", "deleted", "listed", "asked"}
"""

import asyncio
import base64
import json
import sys

import os

import mcp
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def result_json(result):
    text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    return {"is_error": bool(result.is_error), "text": text, "structured": result.structured_content}


class Answers:
    """The user and the model on the client's side: they record what they were asked."""

    def __init__(self):
        self.asked = []
        self.confirmations = ["decline", "accept"]

    async def sample(self, context, params):
        self.asked.append({"method": "sampling/createMessage", "text": params.messages[0].content.text,
                           "max_tokens": params.max_tokens})
        return mcp.types.CreateMessageResult(role="assistant", model="client-model", stop_reason="endTurn",
                                             content=mcp.types.TextContent(type="text", text="A short summary."))

    async def elicit(self, context, params):
        self.asked.append({"method": "elicitation/create", "message": params.message})
        action = self.confirmations.pop(0)
        return mcp.types.ElicitResult(action=action, content={"confirm": True} if action == "accept" else None)


async def main(url, mode, scenario, rest):
    server = url
    if os.environ.get("MCP_BEARER"):
        # A bearer token, as a client configured with an API token sends it.
        headers = {"Authorization": f"Bearer {os.environ['MCP_BEARER']}"}
        server = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    answers = Answers()
    callbacks = {"sampling_callback": answers.sample, "elicitation_callback": answers.elicit} if scenario == "ask" else {}
    async with mcp.Client(server, mode=mode, **callbacks) as client:
        out = {"protocol": str(client.protocol_version)}
        if scenario == "list":
            names, cursor, pages = [], None, 0
            while True:
                page = await client.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                pages += 1
                cursor = page.next_cursor
                if not cursor:
                    break
            out["tools"], out["pages"] = names, pages
        elif scenario == "call":
            name, args = rest[0], json.loads(rest[1]) if len(rest) > 1 else {}
            out.update(result_json(await client.call_tool(name, args)))
        elif scenario == "discover":
            query, args = rest[0], json.loads(rest[1]) if len(rest) > 1 else {}
            found = await client.call_tool("discover_tools", {"query": query, "top_k": 3})
            tools = found.structured_content["tools"]
            out["found"] = [t["name"] for t in tools]
            called = await client.call_tool("call_tool", {"name": tools[0]["name"], "arguments": args})
            out.update(result_json(called))
        elif scenario == "ask":
            content = base64.b64encode(rest[0].encode()).decode()
            saved = await client.call_tool("file_upload", {"name": "notes.txt", "content_base64": content})
            file_id = {"file_id": saved.structured_content["id"]}
            out["summary"] = result_json(await client.call_tool("file_summarize", file_id))
            out["declined"] = result_json(await client.call_tool("file_delete", file_id))
            out["deleted"] = result_json(await client.call_tool("file_delete", file_id))
            out["listed"] = result_json(await client.call_tool("file_list", {}))["structured"]
            out["asked"] = answers.asked
        else:
            raise SystemExit(f"unknown scenario {scenario}")
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
