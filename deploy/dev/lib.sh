# Shared helpers for the local setup scripts: step logging, failure messages, cache paths.
# Sourced, not run. Every script that sources it prints what it does and names the step that failed.

ISA_CACHE="${ISA_CACHE:-$HOME/.cache/isa}"
ISA_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ISA_CACHE

CURRENT_STEP="(none)"

step() {
  CURRENT_STEP="$*"
  printf '\n==> %s\n' "$*" >&2
}

note() { printf '    %s\n' "$*" >&2; }

die() {
  printf '\nFAILED in step "%s": %s\n' "$CURRENT_STEP" "$*" >&2
  exit 1
}

# Verifies a file's sha256; on mismatch deletes it so the next run downloads it again.
check_sha256() {
  local file="$1" want="$2" got
  [ -f "$file" ] || die "expected file $file is missing"
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$file"
    die "checksum mismatch for $file: expected $want, got $got (file removed; rerun to download again)"
  fi
}

# apt-get install for packages not yet installed; runs `apt-get update` once per process when needed.
APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && { note "already installed: $*"; return 0; }
  if [ $APT_UPDATED = 0 ]; then
    note "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
  note "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# Prints a Supabase token (HS256, audience "authenticated", an hour long) for user $2, signed
# with the secret $1: what the services accept with --supabase-jwt-secret.
supabase_token() {
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, json, sys, time
def part(value):
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
secret, user = sys.argv[1], sys.argv[2]
claims = {"sub": user, "aud": "authenticated", "email": f"{user}@example.com", "exp": int(time.time()) + 3600}
signed = part({"alg": "HS256", "typ": "JWT"}) + "." + part(claims)
print(signed + "." + part(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()))
PY
}

# Prints a free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
