#!/usr/bin/env bash
# Soak run of isa-mcp serve with its user and event services: 50 concurrent clients for
# DURATION (default 10m) mixing MCP tools/call (current_time, 15 clients), discover_tools over
# the MetaTool catalog (15), file uploads (10) and event posts (10), with wrk. Every answer is
# checked (status and body); the server's resident memory is read every 10 s and printed per
# minute, first minute against last. Not part of the test command.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
command -v wrk >/dev/null || apt_install wrk
DURATION=${DURATION:-10m}
cargo build -q --release -p isa-mcp-server
out="$ISA_REPO/target/soak"
rm -rf "$out"; mkdir -p "$out"
mcp_port=$(free_port) users_port=$(free_port) events_port=$(free_port)
secret="soak-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ISA_LOG=warn ./target/release/isa-mcp serve --data-dir "$out/data" --stateless \
  --catalog benches/data/metatool/catalog.json \
  --bind "127.0.0.1:$mcp_port" --users-bind "127.0.0.1:$users_port" --events-bind "127.0.0.1:$events_port" \
  --supabase-jwt-secret "$secret" >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for port in $mcp_port $users_port $events_port; do
  for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done
token=$(supabase_token "$secret" soak)
boundary=soak-boundary
upload=$(printf -- '--%s\r\nContent-Disposition: form-data; name="file"; filename="note.txt"\r\nContent-Type: text/plain\r\n\r\nsoak test file\r\n--%s--\r\n' "$boundary" "$boundary")

step "soak: 50 clients for $DURATION (tools/call 15, discover_tools 15, uploads 10, events 10)"
wrk_run() {
  local name="$1" connections="$2" script="$3" url="$4"; shift 4
  env "$@" wrk -t1 -c"$connections" -d"$DURATION" --latency -s "$DEV/load/$script" "$url" >"$out/$name.txt" 2>&1
}
clients=()
wrk_run tools_call 15 call.lua "http://127.0.0.1:$mcp_port/mcp/" TOOL=current_time &
clients+=($!)
wrk_run discover 15 call.lua "http://127.0.0.1:$mcp_port/mcp/" TOOL=discover_tools \
  ARGS='{"query":"find a restaurant and book a table for tonight","top_k":5}' &
clients+=($!)
wrk_run uploads 10 post.lua "http://127.0.0.1:$users_port/api/users/soak/files" \
  BODY="$upload" CONTENT_TYPE="multipart/form-data; boundary=$boundary" \
  AUTHORIZATION="Bearer $token" EXPECT=201 CONTAINS='"sha256"' &
clients+=($!)
wrk_run events 10 post.lua "http://127.0.0.1:$events_port/api/events" \
  BODY='{"kind":"soak.tick","payload":{"n":1}}' AUTHORIZATION="Bearer $token" EXPECT=202 &
clients+=($!)

# Resident memory every 10 s while the clients run.
( while kill -0 $server 2>/dev/null; do
    awk -v t="$(date +%s)" '/VmRSS/ {print t, $2}' "/proc/$server/status"
    sleep 10
  done ) >"$out/rss.txt" &
sampler=$!
wait "${clients[@]}"
kill $sampler 2>/dev/null || true

for name in tools_call discover uploads events; do
  note "$name: $(grep -E 'Requests/sec' "$out/$name.txt" | tr -s ' ')  $(grep -E 'bad responses' "$out/$name.txt")"
  grep -E "Non-2xx|Socket errors" "$out/$name.txt" | sed 's/^/    /' >&2 || true
done
step "resident memory (MiB), the largest reading of each minute"
awk 'NR == 1 {start = $1} {minute = int(($1 - start) / 60); if ($2 > peak[minute]) peak[minute] = $2; last = minute}
     END {for (m = 0; m <= last; m++) printf "    minute %2d: %.1f\n", m + 1, peak[m] / 1024;
          printf "    last minute against the first: %+.1f MiB\n", (peak[last] - peak[0]) / 1024}' "$out/rss.txt" >&2
bad=$(cat "$out"/{tools_call,discover,uploads,events}.txt | awk '/bad responses/ {sum += $NF} END {print sum + 0}')
[ "$bad" = 0 ] || die "$bad answers were errors; see $out"
