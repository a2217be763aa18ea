#!/usr/bin/env bash
# The deployment end to end through the local load balancer (deploy/local/up.sh): every route of
# every service (deploy/routes.py served) reaches the service that serves it, as each answer's
# x-isa-service header says; one user's journey (a token, an upload through /api/users, a chat
# through /api/chat in which the agent finds and calls the file tools on the MCP host and its
# model through the model host, the events recorded, the credits charged); and a host stopped
# leaves rotation within the health checks' interval while the rest keeps serving, and comes
# back when it starts again.
set -euo pipefail
LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$LOCAL/../dev/lib.sh"
eval "$("$LOCAL/up.sh" | grep '^export ')"
trap '"$LOCAL/up.sh" stop >/dev/null 2>&1 || true' EXIT
LB="$ISA_LOCAL_URL"
STATE="$ISA_REPO/target/local"
served_by() { curl -s -o /dev/null -D - "$LB$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-isa-service" {print $2}'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' "$LB$1"; }

step "every route of every service through the load balancer"
routes=0
while read -r path service; do
  got=$(served_by "$path")
  if [ "$service" = blocked ]; then
    [ -z "$got" ] && [ "$(status_of "$path")" = 404 ] || die "$path should be refused by the balancer, got ${got:-?}"
  else
    [ "$got" = "$service" ] || die "$path reached ${got:-nothing}, not $service"
  fi
  routes=$((routes + 1))
done < <(python3 "$LOCAL/../routes.py" served)
note "$routes routes, each answered by its service"
grep -q 'uri /mcp/health ' "$STATE/haproxy.cfg" && grep -q 'uri /api/v1/health ' "$STATE/haproxy.cfg" \
  || die "the balancer's health checks are not the seed's paths"

step "one user's journey"
user="journey-$(date +%s)"
token=$(supabase_token "$SUPABASE_JWT_SECRET" "$user")
auth=(-H "Authorization: Bearer $token")
printf 'shopping list\n' > "$STATE/list.txt"
upload=$(curl -sf "${auth[@]}" -F "file=@$STATE/list.txt;type=text/plain" "$LB/api/users/$user/files") \
  || die "the upload through /api/users failed"
echo "$upload" | grep -q '"name":"list.txt"' || die "upload answered $upload"
chat=$(curl -sfN "${auth[@]}" -H 'content-type: application/json' \
  -d '{"message": "Save a note to my files, then list my files", "session_id": "journey"}' "$LB/api/chat") \
  || die "the chat through /api/chat failed"
echo "$chat" | tail -n 2 | grep -q '^data: \[DONE\]' || die "the chat did not end with [DONE]: $(echo "$chat" | tail -n 5)"
echo "$chat" | grep -q '"content":"Saved. Your files: list.txt, notes.txt."' \
  || die "the agent did not list both files: $(echo "$chat" | grep '"type":"end"')"
for tool in file_upload file_list file_download_url; do
  echo "$chat" | grep -q "\[$tool\] Completed" || die "the agent did not call $tool"
done
billing=$(echo "$chat" | grep '"type":"billing"' | sed 's/^data: //')
total=$(echo "$billing" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["total_credits"])')
[ "$total" = 366 ] || die "the run reported $total credits: $billing"
sleep 1
events=$(curl -sf "${auth[@]}" "$LB/api/events?kind=agent.tool.called&limit=10") || die "reading events failed"
calls=$(echo "$events" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["events"]))')
[ "$calls" = 3 ] || die "$calls agent.tool.called events: $events"
history=$(curl -sf "${auth[@]}" "$LB/api/users/$user/credits/history") || die "reading the credits failed"
charged=$(echo "$history" | python3 -c '
import json, sys
rows = json.load(sys.stdin)["transactions"]
print(sum(-r["amount"] for r in rows if r["amount"] < 0))')
[ "$charged" = 366 ] || die "the ledger took $charged credits, the run reported 366: $history"
note "$user uploaded a file, chatted (3 tool calls on the MCP host, 3 model calls on the model host), 3 events, 366 credits charged"

step "a host stopped leaves rotation; the rest keeps serving"
kill "$(cat "$STATE/model.pid")"
started=$(date +%s.%N)
for _ in $(seq 100); do
  [ "$(status_of /api/v1/models)" = 503 ] && [ -z "$(served_by /api/v1/models)" ] && break
  sleep 0.1
done
[ "$(status_of /api/v1/models)" = 503 ] || die "the stopped model host is still in rotation"
out=$(python3 -c "import time; print(round(time.time() - $started, 1))")
note "the model host left rotation ${out} s after it stopped (checks every 1 s, out after 2 failures)"
[ "$(served_by /api/agents)" = agent ] && [ "$(served_by /mcp/health)" = mcp ] && [ "$(served_by /api/users/me)" = users ] \
  || die "the other hosts stopped serving"
LOCAL_PROVIDER_KEY=test-provider-key ISA_LOG=warn "${CARGO_TARGET_DIR:-$ISA_REPO/target}/release/isa-model" \
  --data-dir "$STATE/model" --bind 127.0.1.2:8082 --config "$STATE/models.toml" >>"$STATE/model.log" 2>&1 &
echo $! > "$STATE/model.pid"
for _ in $(seq 100); do [ "$(served_by /api/v1/health)" = model ] && break; sleep 0.1; done
[ "$(served_by /api/v1/health)" = model ] || die "the model host did not come back into rotation"
note "the model host came back into rotation once it answered its health checks"
