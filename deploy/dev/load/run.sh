#!/usr/bin/env bash
# Load run of isa-mcp serve with wrk: 50 concurrent clients, first tools/call of a trivial tool
# (current_time), then discover_tools over the MetaTool catalog with varied queries. Prints
# requests/s, p50/p99 latency and the server's resident memory after each run.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
command -v wrk >/dev/null || apt_install wrk
DURATION=${DURATION:-20s}
cargo build -q --release -p isa-mcp-server
port=18089
ISA_LOG=warn ./target/release/isa-mcp serve --bind "127.0.0.1:$port" \
  --catalog ../shared/bench/metatool/catalog.json --data-dir "$(mktemp -d)" \
  --users-bind off --events-bind off &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$server/status"; echo; }
note "idle: $(rss)"
url="http://127.0.0.1:$port/mcp/"
step "tools/call current_time, 50 connections, $DURATION"
TOOL=current_time wrk -t2 -c50 -d"$DURATION" --latency -s "$DEV/load/call.lua" "$url" | grep -E "Requests/sec|p50|Non-2xx|Socket"
note "$(rss)"
step "discover_tools over the MetaTool catalog (199 tools), 50 connections, $DURATION"
TOOL=discover_tools ARGS='{"query":"find a restaurant and book a table for tonight","top_k":5}' \
  wrk -t2 -c50 -d"$DURATION" --latency -s "$DEV/load/call.lua" "$url" | grep -E "Requests/sec|p50|Non-2xx|Socket"
note "$(rss)"
