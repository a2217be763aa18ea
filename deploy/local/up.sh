#!/usr/bin/env bash
# The whole deployment on this machine, as on AWS: three hosts on their own loopback addresses
# (MCP with the user and event services on 127.0.1.1, the model service on 127.0.1.2, the agent
# on 127.0.1.3), PostgreSQL (database isa_local, made afresh), Garage as S3 for users' files,
# the tests' scripted model standing in for the paid providers (127.0.1.9), and haproxy in front
# on 127.0.0.1:18000, configured from deploy/routes.json with health checks every second on each
# service's path (a target leaves rotation after two failed checks, and comes back after two
# good ones).
#
# Usage: deploy/local/up.sh          start everything; prints the URLs and `export` lines
#        deploy/local/up.sh stop     stop everything it started
# State, logs and the haproxy configuration in target/local.
set -euo pipefail
LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEV="$LOCAL/../dev"
source "$DEV/lib.sh"
STATE="$ISA_REPO/target/local"
BIN="${CARGO_TARGET_DIR:-$ISA_REPO/target}/release"
LB=127.0.0.1:18000
DATABASE=postgres://postgres@127.0.0.1:5432/isa_local

stop() {
  for pidfile in "$STATE"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = stop ]; then
  stop
  note "stopped"
  exit 0
fi

command -v haproxy >/dev/null || die "haproxy is missing; run deploy/dev/setup-services.sh"
stop
step "building isa-mcp, isa-model, isa-agent and the scripted model (mock-providers)"
(cd "$ISA_REPO" && cargo build -q --release -p isa-mcp-server -p isa-model-server -p isa-agent-server -p isa-benches --bins) \
  || die "build failed"
rm -rf "$STATE"
mkdir -p "$STATE"

step "PostgreSQL database isa_local, made afresh; Garage for users' files"
psql -q -h 127.0.0.1 -U postgres -c "drop database if exists isa_local" -c "create database isa_local" \
  || die "cannot make the database"
eval "$("$DEV/garage.sh" start)"

secret="local-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export DATABASE_URL="$DATABASE" SUPABASE_JWT_SECRET="$secret" ISA_INITIAL_CREDITS=1000000 ISA_LOG=warn
# Starts NAME in the background with its log and pid in the state directory.
launch() {
  local name="$1"; shift
  "$@" >"$STATE/$name.log" 2>&1 &
  echo $! >"$STATE/$name.pid"
}

step "the three hosts and the scripted model"
launch model-provider "$BIN/mock-providers" 127.0.1.9:18290
cat > "$STATE/models.toml" <<TOML
[providers.openai]
kind = "openai"
base_url = "http://127.0.1.9:18290/v1"
api_key_env = "LOCAL_PROVIDER_KEY"

[[models]]
name = "files-agent"
kind = "chat"
deployments = [{ provider = "openai", model = "files-agent", price = { input_per_million = 1.0, output_per_million = 2.0 } }]
TOML
AWS_S3_BUCKET="$ISA_TEST_S3_BUCKET" AWS_ENDPOINT_URL="$ISA_TEST_S3_ENDPOINT" \
  launch mcp "$BIN/isa-mcp" serve --data-dir "$STATE/mcp" --require-auth always \
  --bind 127.0.1.1:8081 --users-bind 127.0.1.1:8100 --events-bind 127.0.1.1:8101 \
  --allowed-hosts 127.0.1.1 --files-url "http://$LB/files" --chromium /nonexistent
LOCAL_PROVIDER_KEY=test-provider-key launch model "$BIN/isa-model" --data-dir "$STATE/model" \
  --bind 127.0.1.2:8082 --config "$STATE/models.toml"
launch agent "$BIN/isa-agent" --data-dir "$STATE/agent" --bind 127.0.1.3:8080 --model files-agent \
  --model-url http://127.0.1.2:8082/api/v1 --mcp-url http://127.0.1.1:8081/mcp

step "haproxy on $LB from deploy/routes.json"
python3 "$LOCAL/../routes.py" haproxy "$LB" mcp=127.0.1.1 model=127.0.1.2 agent=127.0.1.3 --interval 1 \
  >"$STATE/haproxy.cfg"
haproxy -c -q -f "$STATE/haproxy.cfg" || die "haproxy refuses the generated configuration"
launch haproxy haproxy -db -f "$STATE/haproxy.cfg"

# Ready when each service answers through the balancer (it has passed two health checks).
for route in mcp=/mcp/health users=/api/users/me events=/api/events model=/api/v1/health agent=/health; do
  service=${route%%=*} path=${route#*=}
  for _ in $(seq 300); do
    curl -s -o /dev/null -D - "http://$LB$path" | grep -qi "^x-isa-service: $service" && continue 2
    sleep 0.1
  done
  die "the $service service is not in rotation; logs in $STATE"
done
note "load balancer: http://$LB (MCP at /mcp, users /api/users, events /api/events, model /api/v1, agent /api/chat)"
note "mint a token: source deploy/dev/lib.sh; supabase_token \"\$SUPABASE_JWT_SECRET\" USER"
echo "export ISA_LOCAL_URL=http://$LB SUPABASE_JWT_SECRET=$secret DATABASE_URL=$DATABASE"
