#!/usr/bin/env bash
# The model gateway side by side on this machine: a provider that answers at once
# (benches' mock-openai), reached (a) directly, (b) through isa-model, (c) through LiteLLM's
# proxy (PyPI, pinned below, in a venv in the cache), one after the other, each gateway alone on
# the machine while it is measured. For each: open-loop runs at RATE requests/s and at LOW_RATE
# (rate-load: p50/p99 to the end of the body, so the added latency is (b) or (c) minus (a));
# then wrk at 50 connections, non-streamed and streamed chat (requests/s, p50/p99); and each
# gateway's resident memory. LITELLM=0 leaves LiteLLM out; LiteLLM runs with one worker process
# per core (LITELLM_WORKERS), its recommended setting.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
command -v wrk >/dev/null || apt_install wrk
DURATION=${DURATION:-15s}
RATE=${RATE:-1000}
# The newest release whose `proxy` extra installs from PyPI here (1.103 and later need
# litellm-proxy-extras builds the registry does not have). Never 1.82.7 or 1.82.8 (malware).
LITELLM_VERSION=1.102.4
BIN="${CARGO_TARGET_DIR:-target}/release"

step "building isa-model, isa-mcp (for an API key), mock-openai and rate-load"
cargo build -q --release -p isa-model-server -p isa-mcp-server -p isa-benches --bins

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
wait_for() { for _ in $(seq 600); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; die "$1 did not answer"; }
# Resident memory of a process and its children, in MiB.
rss() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) ))
  done
  echo "$(( total / 1024 )) MiB"
}

mock=127.0.0.1:18090
"$BIN/mock-openai" "$mock" & pids+=($!)

data_dir=$(mktemp -d)
cat > "$data_dir/models.toml" <<TOML
[providers.mock]
kind = "openai_compatible"
base_url = "http://$mock/v1"

[[models]]
name = "mock"
kind = "chat"
deployments = [{ provider = "mock", model = "mock" }]
TOML
key=$("$BIN/isa-mcp" keys create --user bench --data-dir "$data_dir" 2>/dev/null)
ISA_LOG=warn "$BIN/isa-model" --bind 127.0.0.1:18091 --config "$data_dir/models.toml" --data-dir "$data_dir" & isa=$!
pids+=($isa)

wait_for "http://127.0.0.1:18091/health"

plain='{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}'
streamed='{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"stream":true,"stream_options":{"include_usage":true}}'
# One target's figures: latency first, on a quiet gateway (after a closed-loop run a gateway may
# still be writing what that run left, isa's usage events, which is not the latency a steady rate
# sees), after two uncounted seconds that open the connections to the provider and verify and
# cache the key; then throughput. RATE is the target's rate; LOW_RATE one that LiteLLM sustains
# too, for added latency side by side.
measure() {
  local name=$1 url=$2 credential=$3 rate mode body
  "$BIN/rate-load" "$url" 100 2 "$plain" "Authorization: Bearer $credential" >/dev/null
  for rate in "$RATE" "${LOW_RATE:-100}"; do
    step "$name, open loop at $rate requests/s for 10 s, not streamed"
    "$BIN/rate-load" "$url" "$rate" 10 "$plain" "Authorization: Bearer $credential"
  done
  for mode in plain streamed; do
    step "$name, $mode, wrk 50 connections, $DURATION"
    [ "$mode" = plain ] && body=$plain || body=$streamed
    BODY="$body" KEY="$credential" wrk -t2 -c50 -d"$DURATION" --latency -s "$DEV/load/chat.lua" "$url" \
      | grep -E "Requests/sec|p50 .*bad|Non-2xx|Socket" || true
  done
}

measure direct "http://$mock/v1/chat/completions" none
measure isa http://127.0.0.1:18091/api/v1/chat/completions "$key"
step "isa-model's resident memory after its runs"
note "$(rss "$isa")"

# LiteLLM starts only now, so its processes take no core from the runs above.
if [ "${LITELLM:-1}" = 1 ]; then
  step "LiteLLM proxy $LITELLM_VERSION (venv in $ISA_CACHE/litellm)"
  venv="$ISA_CACHE/litellm"
  if ! "$venv/bin/python" -c "import importlib.metadata as m,sys; sys.exit(m.version('litellm')!='$LITELLM_VERSION')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" || die "pip install litellm[proxy]==$LITELLM_VERSION failed"
  fi
  cat > "$data_dir/litellm.yaml" <<YAML
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      api_base: http://$mock/v1
      api_key: none
general_settings:
  master_key: sk-bench
litellm_settings:
  drop_params: true
YAML
  LITELLM_LOG=ERROR "$venv/bin/litellm" --config "$data_dir/litellm.yaml" --host 127.0.0.1 --port 18092 \
    --num_workers "${LITELLM_WORKERS:-$(nproc)}" \
    > "$data_dir/litellm.log" 2>&1 & litellm=$!
  pids+=($litellm)
  wait_for "http://127.0.0.1:18092/health/liveliness"
  measure litellm http://127.0.0.1:18092/v1/chat/completions sk-bench
  step "LiteLLM's resident memory after its runs"
  note "$(rss "$litellm")"
fi
true
