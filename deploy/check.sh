#!/usr/bin/env bash
# Checks the deployment's files offline: the routing table against every route of every
# service (deploy/routes.py), the systemd units (systemd-analyze verify, and an exposure level
# of OK or better from systemd-analyze security), and the Terraform: fmt and validate against the
# AWS provider from the machine's local plugin mirror (skipped with a line saying so where
# Terraform or the mirror is missing), checkov's static checks (each check skipped in deploy/aws
# says why beside the resource), then apply, read back and destroy against moto
# (deploy/moto/apply.sh).
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$DEPLOY/dev/lib.sh"

step "the routing table (deploy/routes.json) against every route of every service"
python3 "$DEPLOY/routes.py"

step "systemd units: systemd-analyze verify and security"
if command -v systemd-analyze >/dev/null; then
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/local/lib/isa" "$root/etc/isa" "$root/usr/lib/systemd"
  cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
  cp "$DEPLOY"/systemd/*.service "$root/etc/systemd/system/"
  cp "$DEPLOY/systemd/fetch-secrets" "$root/usr/local/lib/isa/"
  units=()
  for unit in "$DEPLOY"/systemd/*.service; do
    name=$(basename "$unit" .service)
    units+=("$name.service")
    printf '#!/bin/sh\n' > "$root/usr/local/bin/$name"
    chmod +x "$root/usr/local/bin/$name"
    touch "$root/etc/isa/$name.env"
  done
  complaints=$(systemd-analyze verify --root="$root" --man=no "${units[@]}" 2>&1 || true)
  [ -z "$complaints" ] || die "systemd-analyze verify: $complaints"
  note "verify: ${units[*]} without a complaint"
  for unit in "${units[@]}"; do
    level=$(systemd-analyze security --offline=true --root="$root" "$unit" 2>&1 | grep 'Overall exposure level' || true)
    note "$level"
    echo "$level" | grep -Eq ': [0-9.]+ (PERFECT|SAFE|OK)' || die "$unit is not OK or better"
  done
else
  note "skipped: systemd-analyze is not on this machine"
fi

step "Terraform (deploy/aws): fmt and validate"
mirror=$(find / -xdev -type d -path '*registry.terraform.io/hashicorp/aws' 2>/dev/null | head -n1 || true)
if ! command -v terraform >/dev/null; then
  note "skipped: terraform is not on this machine"
elif [ -z "$mirror" ]; then
  note "skipped: no local plugin mirror of the AWS provider (registry.terraform.io/hashicorp/aws)"
else
  work=$(mktemp -d)
  touch "$work/empty.tfrc"
  export TF_CLI_CONFIG_FILE="$work/empty.tfrc"
  cp -r "$DEPLOY/aws" "$DEPLOY/routes.json" "$work/"
  terraform -chdir="$work/aws" fmt -check -recursive || die "terraform fmt: run terraform fmt -recursive deploy/aws"
  terraform -chdir="$work/aws" init -backend=false -input=false -plugin-dir="${mirror%/registry.terraform.io/hashicorp/aws}" >/dev/null \
    || die "terraform init failed"
  terraform -chdir="$work/aws" validate -no-color || die "terraform validate failed"
  rm -rf "$work"
fi

step "checkov over deploy/aws (skipped checks carry their reasons in the Terraform)"
CHECKOV="$ISA_CACHE/checkov/bin/checkov"
[ -x "$CHECKOV" ] || die "checkov is missing: run deploy/dev/setup-services.sh"
found=$("$CHECKOV" --directory "$DEPLOY/aws" --framework terraform --compact --skip-download 2>&1) \
  || { printf '%s\n' "$found" >&2; die "checkov found problems in deploy/aws"; }
note "$(grep -m1 'Passed checks' <<<"$found")"

"$DEPLOY/moto/apply.sh"
