"""Reads back what `terraform apply` of deploy/aws made in moto and checks it against what the
Terraform and the routing table say: the files bucket's protections, the listener rules in
priority order, the target groups' health checks, the hosts and their roles and ports.

    readback.py ENDPOINT ENVIRONMENT BUCKET ROUTES_JSON applied|destroyed

Prints one line per check; exits 1 at the first that fails.
"""

import base64
import json
import sys

import boto3

endpoint, environment, bucket, routes_path, phase = sys.argv[1:6]
name = f"isa-{environment}"
routes = json.load(open(routes_path))


def client(service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def check(what, ok, detail=""):
    if not ok:
        print(f"    FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"    ok: {what}", file=sys.stderr)


s3, elbv2, ec2, iam = client("s3"), client("elbv2"), client("ec2"), client("iam")

if phase == "destroyed":
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    check("the files bucket is gone", bucket not in buckets, buckets)
    balancers = [b["LoadBalancerName"] for b in elbv2.describe_load_balancers()["LoadBalancers"]]
    check("the load balancer is gone", name not in balancers, balancers)
    running = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    check("no host runs", not running, running)
    sys.exit(0)

# The files bucket.
versioning = s3.get_bucket_versioning(Bucket=bucket)
check("bucket versioning is Enabled", versioning.get("Status") == "Enabled", versioning)
rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
check(
    "bucket encryption is aws:kms by default, with a bucket key",
    rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    and rule.get("BucketKeyEnabled") is True,
    rule,
)
block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
check(
    "all four public-access blocks are on",
    block
    == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    },
    block,
)
policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
denies_plain = [
    s
    for s in policy["Statement"]
    if s["Effect"] == "Deny"
    and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
]
check("the bucket policy refuses requests without TLS", len(denies_plain) == 1, policy)
lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
check(
    "lifecycle expires old versions after 30 days and abandoned uploads after 1",
    len(lifecycle) == 1
    and lifecycle[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    and lifecycle[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1,
    lifecycle,
)

# The balancer: listeners, rules in priority order, target groups.
balancer = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
groups = {
    g["TargetGroupArn"]: g
    for g in elbv2.describe_target_groups(LoadBalancerArn=balancer["LoadBalancerArn"])[
        "TargetGroups"
    ]
}
service_of = {arn: g["TargetGroupName"].removeprefix(f"{name}-") for arn, g in groups.items()}
check(
    "one target group per service",
    sorted(service_of.values()) == sorted(routes["services"]),
    service_of,
)
for group in groups.values():
    service = routes["services"][service_of[group["TargetGroupArn"]]]
    check(
        f"{group['TargetGroupName']} checks {service['health_check']} on port {service['port']}",
        group["HealthCheckPath"] == service["health_check"] and group["Port"] == service["port"],
        group,
    )
listeners = {
    l["Port"]: l
    for l in elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
}
check("listeners on 80 and 443", sorted(listeners) == [80, 443], sorted(listeners))
redirect = listeners[80]["DefaultActions"][0]
check(
    "HTTP redirects to HTTPS",
    redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS",
    redirect,
)
https = listeners[443]
default = https["DefaultActions"][0]
check(
    f"HTTPS forwards to {routes['default']} by default",
    https["Protocol"] == "HTTPS" and service_of[default["TargetGroupArn"]] == routes["default"],
    https,
)
rules = elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
applied = []
for r in sorted((r for r in rules if not r["IsDefault"]), key=lambda r: int(r["Priority"])):
    # A rule's paths are a set: any one matching is a match.
    paths = sorted(v for c in r["Conditions"] for v in c["PathPatternConfig"]["Values"])
    action = r["Actions"][0]
    target = (
        service_of[action["TargetGroupArn"]]
        if action["Type"] == "forward"
        else action["FixedResponseConfig"]["StatusCode"]
    )
    applied.append((int(r["Priority"]), target, paths))
expected = [(routes["blocked"]["priority"], "404", sorted(routes["blocked"]["paths"]))] + [
    (r["priority"], r["service"], sorted(r["paths"])) for r in routes["rules"]
]
check(
    f"the listener's {len(expected)} rules are the routing table's, in its order",
    applied == expected,
    f"\n      applied:  {applied}\n      expected: {expected}",
)

# The hosts.
instances = [
    i
    for r in ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    for i in r["Instances"]
]
by_host = {
    next(t["Value"] for t in i.get("Tags", []) if t["Key"] == "Name").removeprefix(f"{name}-"): i
    for i in instances
}
check("three hosts: mcp, model, agent", sorted(by_host) == ["agent", "mcp", "model"], sorted(by_host))
for host, instance in by_host.items():
    check(f"{host} requires IMDSv2", instance["MetadataOptions"]["HttpTokens"] == "required")
    data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(data["UserData"]["Value"]).decode()
    secrets = [s for s in ("DATABASE_URL", "API_KEY", "SECRET", "PASSWORD") if s in script]
    check(
        f"{host}'s user data installs its unit and holds no secret",
        "systemctl enable --now" in script and not secrets,
        secrets,
    )

# Least privilege: the files bucket from the MCP host's role alone, users/* and uploads/* only.
for host in ("mcp", "model", "agent"):
    role = f"{name}-{host}"
    documents = [
        json.dumps(iam.get_role_policy(RoleName=role, PolicyName=p)["PolicyDocument"])
        for p in iam.list_role_policies(RoleName=role)["PolicyNames"]
    ]
    attached = iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    touches_files = [d for d in documents if bucket in d]
    check(f"{role} has no managed policy attached", not attached, attached)
    if host == "mcp":
        resources = [
            res
            for d in touches_files
            for s in json.loads(d)["Statement"]
            for res in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        ]
        objects = sorted(r for r in resources if r.startswith(f"arn:aws:s3:::{bucket}/"))
        check(
            f"{role} reaches users/* and uploads/* of the bucket and no other key",
            objects == [f"arn:aws:s3:::{bucket}/uploads/*", f"arn:aws:s3:::{bucket}/users/*"],
            objects,
        )
    else:
        check(f"{role} has no access to the files bucket", not touches_files, touches_files)

# The hosts' ports: from the balancer and from each other, nothing from anywhere.
hosts_group = ec2.describe_security_groups(
    Filters=[{"Name": "group-name", "Values": [f"{name}-hosts"]}]
)["SecurityGroups"][0]
open_ranges = [p for p in hosts_group["IpPermissions"] if p.get("IpRanges")]
check("the hosts take no traffic from an address range", not open_ranges, open_ranges)
ports = sorted({p["FromPort"] for p in hosts_group["IpPermissions"]})
check(
    "the hosts take only the services' ports",
    ports == sorted(s["port"] for s in routes["services"].values()),
    ports,
)
