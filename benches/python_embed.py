"""The same embedding workload as benches/embedding.rs, through Python's onnxruntime and the
Hugging Face tokenizers, for a side-by-side comparison on one machine.

    python3 -m pip install onnxruntime==1.31.1 tokenizers numpy
    python3 benches/python_embed.py            # uses $ISA_CACHE/models/all-MiniLM-L6-v2

Prints descriptions per second (one at a time, and in batches of 64 padded to the longest), the
p50 latency of one short query, and the p50 of the first 256 single-tool and multi-tool MetaTool
requests each embedded alone (the requests benches/selection.rs's `discovery` group selects
for), with 2 intra-op threads like the Rust side.
"""

import json
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

cache = os.environ.get("ISA_CACHE", os.path.expanduser("~/.cache/isa"))
model_dir = os.environ.get("ISA_EMBEDDING_MODEL_DIR", os.path.join(cache, "models", "all-MiniLM-L6-v2"))
here = os.path.dirname(os.path.abspath(__file__))
metatool = os.path.join(here, "data", "metatool")
catalog = json.load(open(os.path.join(metatool, "catalog.json")))


def readable(name):
    out, prev = [], ""
    for c in name:
        if c in "_-./":
            out.append(" ")
        else:
            if c.isupper() and prev.islower():
                out.append(" ")
            out.append(c)
        prev = c
    return "".join(out)


texts = [f"{readable(t['name'])}: {t['description']}" for t in catalog["tools"]]

tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
tokenizer.enable_truncation(max_length=256)
tokenizer.no_padding()
options = ort.SessionOptions()
options.intra_op_num_threads = 2
options.inter_op_num_threads = 1
session = ort.InferenceSession(os.path.join(model_dir, "model.onnx"), options, providers=["CPUExecutionProvider"])
inputs = {i.name for i in session.get_inputs()}


def embed(batch):
    encodings = tokenizer.encode_batch(batch)
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, e in enumerate(encodings):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in inputs:
        feed["token_type_ids"] = np.zeros_like(ids)
    states = session.run(None, feed)[0]
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


embed(["warm up"])
for label, size in [("one at a time", 1), ("batches of 64", 64)]:
    started = time.perf_counter()
    for i in range(0, len(texts), size):
        embed(texts[i : i + size])
    elapsed = time.perf_counter() - started
    print(f"catalog, {label}: {len(texts) / elapsed:.0f} descriptions/s")

latencies = []
for _ in range(500):
    started = time.perf_counter()
    embed(["what's the weather in Paris tomorrow?"])
    latencies.append((time.perf_counter() - started) * 1000)
print(f"one short query: p50 {statistics.median(latencies):.2f} ms")

# The requests benches/selection.rs's discovery group selects for, each embedded alone.
for label, name in [("single-tool", "queries-single.jsonl"), ("multi-tool", "queries-multi.jsonl")]:
    with open(os.path.join(metatool, name)) as f:
        queries = [json.loads(line)["query"] for _, line in zip(range(256), f)]
    latencies = []
    for _ in range(4):
        for query in queries:
            started = time.perf_counter()
            embed([query])
            latencies.append((time.perf_counter() - started) * 1000)
    print(f"MetaTool {label} queries, each embedded alone: p50 {statistics.median(latencies):.2f} ms")
sys.exit(0)
