#!/usr/bin/env bash
# The agent service under many sessions at once, on this machine: the three services of a host
# built for release (isa-mcp serve with credentials required, isa-model, isa-agent) over one
# SQLite database, and a model that answers at once but streams each answer over a second
# (benches' mock-openai, model `agent-slow`: a `current_time` call, then 20 pieces 50 ms apart).
# SESSIONS chats start at the same moment (benches' agent-load), ROUNDS times over the same
# sessions, each round reloading a longer session (FRESH=1: new sessions each round). The agent's resident memory is sampled
# every 100 ms: before the first round, the peak of each round, and after the last, so a
# growth from round to round shows. SINGLE=1 first runs one session alone, as the peer.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
SESSIONS=${SESSIONS:-200}
ROUNDS=${ROUNDS:-5}
BIN="${CARGO_TARGET_DIR:-target}/release"

step "building isa-mcp, isa-model, isa-agent, mock-openai and agent-load"
cargo build -q --release -p isa-mcp-server -p isa-model-server -p isa-agent-server -p isa-benches --bins

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_for() { for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; die "$1 did not answer"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

data=$(mktemp -d)
"$BIN/mock-openai" 127.0.0.1:18190 & pids+=($!)
cat > "$data/models.toml" <<TOML
[providers.mock]
kind = "openai_compatible"
base_url = "http://127.0.0.1:18190/v1"

[[models]]
name = "agent-slow"
kind = "chat"
deployments = [{ provider = "mock", model = "agent-slow" }]
TOML
key=$("$BIN/isa-mcp" keys create --user load --data-dir "$data" 2>/dev/null)
admin=$("$BIN/isa-mcp" keys create --user load-admin --scope admin --data-dir "$data" 2>/dev/null)
ISA_LOG=warn "$BIN/isa-mcp" serve --data-dir "$data" --require-auth always --bind 127.0.0.1:18181 \
  --users-bind 127.0.0.1:18200 --events-bind 127.0.0.1:18201 --chromium /nonexistent 2>"$data/mcp.log" & pids+=($!)
ISA_LOG=warn "$BIN/isa-model" --bind 127.0.0.1:18182 --config "$data/models.toml" --data-dir "$data" & pids+=($!)
ISA_LOG=warn "$BIN/isa-agent" --bind 127.0.0.1:18180 --data-dir "$data" --model agent-slow \
  --model-url http://127.0.0.1:18182/api/v1 --mcp-url http://127.0.0.1:18181/mcp \
  --max-concurrent-runs $((SESSIONS * 2)) & agent=$!
pids+=($agent)
wait_for http://127.0.0.1:18181/health
wait_for http://127.0.0.1:18182/health
wait_for http://127.0.0.1:18180/health
curl -sf -o /dev/null -H "Authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"amount": 1000000000, "request_id": "load-grant", "reason": "load run"}' \
  http://127.0.0.1:18200/api/users/load/credits/grant || die "granting credits failed"

if [ "${SINGLE:-1}" = 1 ]; then
  step "one session alone (the peer)"
  "$BIN/agent-load" http://127.0.0.1:18180 "$key" 1 1
  echo "agent resident memory after one session: $(( $(rss_kib $agent) / 1024 )) MiB"
fi

step "$SESSIONS sessions at once, $ROUNDS rounds"
echo "agent resident memory before: $(( $(rss_kib $agent) / 1024 )) MiB"
peak_file="$data/peak"
for round in $(seq "$ROUNDS"); do
  echo 0 > "$peak_file"
  ( peak=0; while :; do r=$(rss_kib $agent); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.1; done ) &
  sampler=$!
  "$BIN/agent-load" http://127.0.0.1:18180 "$key" "$SESSIONS" 1 "load${FRESH:+-$round}" | sed "s/^round 1/round $round/"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  echo "  agent resident memory: peak $(( $(cat "$peak_file") / 1024 )) MiB, after $(( $(rss_kib $agent) / 1024 )) MiB"
done
