"""Drives an MCP server with the official Python SDK (mcp==2.3.0) and prints what it saw as JSON.

usage: [MCP_BEARER=token] mcp_client.py URL MODE SCENARIO [ARGS_JSON]
  MODE      legacy (2025-11-25, sessions) or 2026-07-28 (stateless)
  SCENARIO  list              -> {"protocol", "tools": [names of every page], "pages"}
            call NAME         -> {"is_error", "text", "structured"} for tools/call NAME ARGS_JSON
            discover QUERY    -> discover_tools(QUERY), then call_tool on the best tool with ARGS_JSON
"""

import asyncio
import json
import sys

import os

import mcp
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def result_json(result):
    text = "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    return {"is_error": bool(result.is_error), "text": text, "structured": result.structured_content}


async def main(url, mode, scenario, rest):
    server = url
    if os.environ.get("MCP_BEARER"):
        # A bearer token, as a client configured with an API token sends it.
        headers = {"Authorization": f"Bearer {os.environ['MCP_BEARER']}"}
        server = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    async with mcp.Client(server, mode=mode) as client:
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
        else:
            raise SystemExit(f"unknown scenario {scenario}")
        print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
