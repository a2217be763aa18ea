#!/usr/bin/env bash
# Load run of isa-mcp serve with wrk, 50 concurrent clients: tools/call of a trivial tool
# (current_time) statelessly in 2026-07-28, the same as a 2025-11-25 client without a session
# (answered as SSE), then discover_tools over the MetaTool catalog, for one request repeated,
# for MetaTool's requests in turn (each embedded anew: the cache holds far fewer than there
# are, and each is met again only after all the others) and for the same requests each asked
# for by many connections at once. Prints requests/s, p50/p99 latency, answers and bad
# answers, and the server's resident memory after each run. First it checks that bad answers
# are counted: a run calling a tool that does not exist must count every answer as bad.
# ISA_MCP_BIN names another isa-mcp binary to load (an earlier build, to compare side by side);
# by default this checkout's release build.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
command -v wrk >/dev/null || apt_install wrk
DURATION=${DURATION:-20s}
if [ -z "${ISA_MCP_BIN:-}" ]; then
  cargo build -q --release -p isa-mcp-server
  ISA_MCP_BIN=./target/release/isa-mcp
fi
port=18089
# Starts the server afresh (its query cache empty) and waits until it answers.
start_server() {
  ISA_LOG=warn "$ISA_MCP_BIN" serve --bind "127.0.0.1:$port" --stateless \
    --catalog benches/data/metatool/catalog.json --data-dir "$(mktemp -d)" \
    --users-bind off --events-bind off &
  server=$!
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
}
start_server
trap 'kill $server 2>/dev/null || true' EXIT
rss() { awk '/VmRSS|VmHWM/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$server/status"; echo; }
url="http://127.0.0.1:$port/mcp/"

# Runs wrk for $1 with the rest of the environment given, and prints its summary lines.
load() {
  local duration="$1"; shift
  env "$@" wrk -t2 -c50 -d"$duration" --latency -s "$DEV/load/call.lua" "$url" \
    | grep -E "Requests/sec|p50|Non-2xx|Socket"
}

step "self-check: a tool that does not exist, every answer counted as bad"
check=$(load 2s TOOL=no_such_tool)
echo "$check"
echo "$check" | awk '/bad responses/ { if ($8 == 0 || $8 != $11) exit 1 }' \
  || die "the load script does not count bad answers: $check"

note "idle: $(rss)"
step "tools/call current_time, 2026-07-28 (stateless), 50 connections, $DURATION"
load "$DURATION" TOOL=current_time
note "$(rss)"
step "tools/call current_time, 2025-11-25 without a session (SSE answers), 50 connections, $DURATION"
load "$DURATION" TOOL=current_time PROTOCOL=2025-11-25
note "$(rss)"
step "discover_tools over the MetaTool catalog (199 tools), one request repeated, 50 connections, $DURATION"
load "$DURATION" TOOL=discover_tools ARGS='{"query":"find a restaurant and book a table for tonight","top_k":5}'
note "$(rss)"
step "discover_tools, MetaTool's 20,614 single-tool requests in turn, 50 connections, $DURATION"
load "$DURATION" TOOL=discover_tools QUERIES=benches/data/metatool/queries-single.jsonl
note "$(rss)"
step "discover_tools, the same requests each sent 25 times in a row (25 connections asking for one new request at once), a fresh server, $DURATION"
kill $server && wait $server || true
start_server
load "$DURATION" TOOL=discover_tools QUERIES=benches/data/metatool/queries-single.jsonl REPEAT=25
note "$(rss)"
