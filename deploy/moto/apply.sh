#!/usr/bin/env bash
# Applies deploy/aws to moto (a local AWS on loopback), reads back what it made
# (deploy/moto/readback.py: the files bucket's versioning, encryption, public-access block,
# TLS-only policy and lifecycle; the listener rules in the routing table's order; the target
# groups' health checks; the hosts, their roles and ports), destroys it and checks it is gone.
# Skips with a line saying so where Terraform or the AWS provider's local mirror is missing;
# moto comes from setup-services.sh.
set -euo pipefail
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$DEPLOY/dev/lib.sh"

step "Terraform (deploy/aws): apply to moto, read back, destroy"
mirror=$(find / -xdev -type d -path '*registry.terraform.io/hashicorp/aws' 2>/dev/null | head -n1 || true)
if ! command -v terraform >/dev/null; then
  note "skipped: terraform is not on this machine"
  exit 0
elif [ -z "$mirror" ]; then
  note "skipped: no local plugin mirror of the AWS provider (registry.terraform.io/hashicorp/aws)"
  exit 0
fi
MOTO="$ISA_CACHE/moto/bin"
[ -x "$MOTO/moto_server" ] || die "moto is missing: run deploy/dev/setup-services.sh"

work=$(mktemp -d)
moto_pid=""
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$("$MOTO/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint="http://127.0.0.1:$port"
"$MOTO/moto_server" -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 50); do curl -fsS "$endpoint/moto-api/" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fsS "$endpoint/moto-api/" >/dev/null || die "moto_server did not start: $(tail -n 5 "$work/moto.log")"
note "moto_server on $endpoint"

export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
# The HTTPS listener's certificate, imported into ACM as an operator would, and an image moto knows.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=isa.example.test" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
read -r certificate ami < <("$MOTO/python" - "$endpoint" "$work" <<'PY'
import sys, boto3
endpoint, work = sys.argv[1:3]
acm = boto3.client("acm", endpoint_url=endpoint)
ec2 = boto3.client("ec2", endpoint_url=endpoint)
arn = acm.import_certificate(
    Certificate=open(f"{work}/cert.pem", "rb").read(),
    PrivateKey=open(f"{work}/key.pem", "rb").read(),
)["CertificateArn"]
print(arn, ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
PY
)

cp -r "$DEPLOY/aws" "$DEPLOY/routes.json" "$work/"
# Terraform merges *_override.tf into the provider block: every service the module uses at moto,
# and few retries, so an action moto lacks fails at once instead of being retried for minutes.
services="acm cloudwatch ec2 elbv2 iam kms s3 ssm sts"
{
  echo 'provider "aws" {'
  echo '  access_key                  = "test"'
  echo '  secret_key                  = "test"'
  echo '  skip_credentials_validation = true'
  echo '  skip_requesting_account_id  = true'
  echo '  skip_metadata_api_check     = true'
  echo '  s3_use_path_style           = true'
  echo '  max_retries                 = 2'
  echo '  endpoints {'
  for service in $services; do echo "    $service = \"$endpoint\""; done
  echo '  }'
  echo '}'
} > "$work/aws/moto_override.tf"
touch "$work/empty.tfrc"
export TF_CLI_CONFIG_FILE="$work/empty.tfrc" TF_IN_AUTOMATION=1
environment=test bucket=isa-files-moto
vars=(-var "environment=$environment" -var "certificate_arn=$certificate" -var "ami_id=$ami"
  -var "artifact_bucket=isa-releases" -var "artifact_key=isa-0.1.0.tar.gz"
  -var "files_bucket_name=$bucket" -var "public_url=https://isa.example.test"
  # moto does not implement MonitorInstances (EC2 detailed monitoring).
  -var "detailed_monitoring=false")

terraform -chdir="$work/aws" init -backend=false -input=false -plugin-dir="${mirror%/registry.terraform.io/hashicorp/aws}" >/dev/null \
  || die "terraform init failed"
# terraform apply|destroy, within a time limit, and how long it took.
terraform_run() {
  local action=$1 limit=$2 started
  started=$(date +%s)
  timeout "$limit" terraform -chdir="$work/aws" "$action" -auto-approve -input=false -no-color "${vars[@]}" \
    > "$work/$action.log" 2>&1 || die "terraform $action failed: $(tail -n 30 "$work/$action.log")"
  note "$(grep -E '^(Apply|Destroy) complete' "$work/$action.log") in $(( $(date +%s) - started )) s"
}
readback() {
  "$MOTO/python" "$DEPLOY/moto/readback.py" "$endpoint" "$environment" "$bucket" "$DEPLOY/routes.json" "$1"
}

terraform_run apply 900
readback applied || die "what terraform made is not what deploy/aws says"
terraform_run destroy 600
readback destroyed || die "terraform destroy left something behind"
