#!/usr/bin/env bash
# Fuzzes the user and event services from their own OpenAPI descriptions with schemathesis,
# authenticated as a signed-in user, against the release `isa-mcp` on SQLite and local files:
# no answer may be a 5xx, and every answer must match the description (status code, content
# type, body schema, headers), nor may a deleted resource stay reachable or a request without
# the credential be served. Two checks are left out because they judge the description's
# precision rather than the service: positive_data_acceptance (a value the schema allows but
# the service refuses, such as an expiry in the past) and negative_data_rejection (a page size
# beyond the documented range is clamped, not refused). Needs schemathesis from
# setup-services.sh. FUZZ_SEED and FUZZ_EXAMPLES choose the run (defaults 1 and 50).
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
schemathesis="$ISA_CACHE/schemathesis/bin/schemathesis"
[ -x "$schemathesis" ] || die "schemathesis is not installed; run deploy/dev/setup-services.sh"
seed="${FUZZ_SEED:-1}" examples="${FUZZ_EXAMPLES:-50}"

step "schemathesis against the user and event services (seed $seed, $examples examples per operation)"
cargo build -q --release --bin isa-mcp || die "cannot build isa-mcp"
mcp_port=$(free_port) users_port=$(free_port) events_port=$(free_port)
out="$ISA_REPO/target/fuzz-api"
rm -rf "$out"; mkdir -p "$out"
secret="fuzz-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"${CARGO_TARGET_DIR:-$ISA_REPO/target}/release/isa-mcp" serve --data-dir "$out/data" \
  --bind "127.0.0.1:$mcp_port" --users-bind "127.0.0.1:$users_port" --events-bind "127.0.0.1:$events_port" \
  --supabase-jwt-secret "$secret" --require-auth always >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for port in $users_port $events_port; do
  started=0
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && { started=1; break; }
    sleep 0.1
  done
  [ $started = 1 ] || die "isa-mcp did not start; see $out/server.log"
done

token=$(supabase_token "$secret" fuzzer)

failed=0
for service in users:$users_port events:$events_port; do
  name=${service%%:*} port=${service##*:}
  if "$schemathesis" run "http://127.0.0.1:$port/openapi.json" --url "http://127.0.0.1:$port" \
      -H "Authorization: Bearer $token" --checks all \
      --exclude-checks positive_data_acceptance,negative_data_rejection \
      --seed "$seed" --max-examples "$examples" --no-color >"$out/$name.log" 2>&1; then
    note "$name: $(grep -E '[0-9]+ generated' "$out/$name.log" | tr -s ' ')"
  else
    failed=1
    sed -n '/FAILURES/,$p' "$out/$name.log" >&2
    note "$name: failures, see $out/$name.log"
  fi
done
grep -E '" 5[0-9]{2} |panicked' "$out/server.log" >&2 || true
[ $failed = 0 ] || die "schemathesis found answers that break the description"
