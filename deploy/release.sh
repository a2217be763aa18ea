#!/usr/bin/env bash
# Builds the release tarball the hosts install (deploy/aws: artifact_bucket/artifact_key):
# bin/isa-mcp, bin/isa-model, bin/isa-agent and systemd/ (the units and fetch-secrets).
# Usage: deploy/release.sh [OUT]   (default target/isa-release.tar.gz); then upload it, e.g.
#   aws s3 cp target/isa-release.tar.gz s3://ARTIFACT_BUCKET/isa/$(git rev-parse --short HEAD).tar.gz
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEPLOY/dev/lib.sh"
cd "$ISA_REPO"
out="${1:-$ISA_REPO/target/isa-release.tar.gz}"
step "building isa-mcp, isa-model and isa-agent for release"
cargo build -q --release -p isa-mcp-server -p isa-model-server -p isa-agent-server --bins
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/systemd"
for bin in isa-mcp isa-model isa-agent; do
  cp "${CARGO_TARGET_DIR:-target}/release/$bin" "$stage/bin/"
done
cp "$DEPLOY"/systemd/*.service "$DEPLOY/systemd/fetch-secrets" "$stage/systemd/"
tar -czf "$out" -C "$stage" bin systemd
note "$out"
