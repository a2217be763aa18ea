#!/usr/bin/env bash
# Starts or stops a single-node Garage S3 server for tests on 127.0.0.1:3900 (region us-east-1), with
# bucket "isa-test" and an access key. `garage.sh start` prints `export` lines for the tests:
# ISA_TEST_S3_ENDPOINT, ISA_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_REGION.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GARAGE_BIN="$ISA_CACHE/garage/bin/garage"
STATE="${ISA_GARAGE_STATE:-$ISA_CACHE/garage-state}"
CONF="$STATE/garage.toml"
PIDFILE="$STATE/garage.pid"
BUCKET=isa-test
KEY_NAME=isa-test-key
g() { "$GARAGE_BIN" -c "$CONF" "$@"; }

port_in_use() { (exec 3<>/dev/tcp/127.0.0.1/3900) 2>/dev/null; }

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    note "garage stopped (pid $pid)"
  fi
  rm -f "$PIDFILE"
}

start() {
  step "Garage: start single node on 127.0.0.1:3900"
  [ -x "$GARAGE_BIN" ] || die "$GARAGE_BIN missing; run deploy/dev/setup-services.sh"
  stop
  mkdir -p "$STATE/meta" "$STATE/data"
  if [ ! -f "$CONF" ]; then
    cat > "$CONF" <<CONF
metadata_dir = "$STATE/meta"
data_dir = "$STATE/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:3901"
rpc_public_addr = "127.0.0.1:3901"
rpc_secret = "$(openssl rand -hex 32)"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:3900"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:3903"
CONF
  fi
  port_in_use && die "127.0.0.1:3900 is already in use by another process; stop it first"
  # The binary itself, not the g() wrapper: $! must be the server's pid for stop() to work.
  "$GARAGE_BIN" -c "$CONF" server > "$STATE/garage.log" 2>&1 &
  echo $! > "$PIDFILE"
  for _ in $(seq 50); do g status >/dev/null 2>&1 && break; sleep 0.2; done
  g status >/dev/null 2>&1 || die "garage did not start; see $STATE/garage.log"

  # A fresh node needs a layout before it stores anything, and bucket creation fails with
  # "Layout not ready" for a moment after the layout is applied, so each step is retried until
  # the bucket exists. The layout is read whole before it is searched: with `pipefail`,
  # `garage layout show | grep -q` fails whenever grep exits at its match before garage has
  # written the rest (SIGPIPE), which left a CI run's node without a layout.
  local node layout bucket_ready= error=
  for _ in $(seq 150); do
    layout=$(g layout show 2>/dev/null) || true
    if [[ $layout == *"No nodes currently have a role"* ]]; then
      node=$(g node id -q 2>/dev/null | cut -d@ -f1) || true
      note "assigning layout to node $node"
      { g layout assign -z dc1 -c 1G "$node" && g layout apply --version 1; } >/dev/null 2>&1 || true
    fi
    if g bucket info "$BUCKET" >/dev/null 2>&1; then
      bucket_ready=1
      break
    fi
    if error=$(g bucket create "$BUCKET" 2>&1); then
      bucket_ready=1
      break
    fi
    sleep 0.2
  done
  if [ -z "$bucket_ready" ]; then
    g layout show >&2 || true
    die "bucket create failed after 30 s (${error##*$'\n'}); see $STATE/garage.log"
  fi
  if ! g key info "$KEY_NAME" >/dev/null 2>&1; then
    g key create "$KEY_NAME" >/dev/null || die "key create failed"
  fi
  g bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null || die "bucket allow failed"
  local info key_id secret
  info=$(g key info --show-secret "$KEY_NAME")
  key_id=$(echo "$info" | awk -F': *' '/Key ID/ {print $2; exit}')
  secret=$(echo "$info" | awk -F': *' '/Secret key/ {print $2; exit}')
  [ -n "$key_id" ] && [ -n "$secret" ] || die "could not read the access key from 'garage key info'"
  note "bucket $BUCKET, key $key_id"
  cat <<ENV
export ISA_TEST_S3_ENDPOINT=http://127.0.0.1:3900
export ISA_TEST_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_S3_REGION=us-east-1
ENV
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
