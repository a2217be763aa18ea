data "aws_caller_identity" "current" {}

locals {
  # The unit each host runs, and the settings it is given (secrets come from SSM at start).
  units = { mcp = "isa-mcp", model = "isa-model", agent = "isa-agent" }
  # Each host's zone (the model host in the second) and fixed private address, so the agent can
  # be told where the others are before they exist.
  host_zone = { mcp = 0, agent = 0, model = 1 }
  host_ip = {
    for host, zone in local.host_zone : host => cidrhost(
      cidrsubnet(var.vpc_cidr, 8, (var.private_hosts ? 10 : 0) + zone),
      host == "agent" ? 11 : 10
    )
  }
  public_host = replace(replace(var.public_url, "https://", ""), "/", "")
  settings = {
    mcp = {
      ISA_MCP_BIND         = "0.0.0.0:8081"
      ISA_USERS_BIND       = "0.0.0.0:8100"
      ISA_EVENTS_BIND      = "0.0.0.0:8101"
      ISA_MCP_REQUIRE_AUTH = "always"
      ISA_MCP_STATELESS    = "true"
      ISA_MCP_PUBLIC_URL   = "${var.public_url}/mcp"
      # The balancer's health checks and the agent reach the server by its private address.
      ISA_MCP_ALLOWED_HOSTS = "${local.public_host},${local.host_ip.mcp}"
      AWS_S3_BUCKET         = aws_s3_bucket.files.bucket
      AWS_S3_REGION         = var.region
    }
    model = {
      ISA_MODEL_BIND       = "0.0.0.0:8082"
      ISA_MODEL_PUBLIC_URL = "${var.public_url}/api/v1"
    }
    agent = {
      ISA_AGENT_BIND       = "0.0.0.0:8080"
      ISA_AGENT_PUBLIC_URL = "${var.public_url}/api"
      ISA_MODEL_URL        = "http://${local.host_ip.model}:8082/api/v1"
      ISA_MCP_URL          = "http://${local.host_ip.mcp}:8081/mcp"
    }
  }
  ssm_prefix = "/isa/${var.environment}"
}

resource "aws_security_group" "hosts" {
  name        = "${local.name}-hosts"
  description = "The three hosts: service ports from the load balancer and from each other"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_ingress_rule" "from_alb" {
  for_each                     = local.services
  security_group_id            = aws_security_group.hosts.id
  description                  = "The ${each.key} service from the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_ingress_rule" "between_hosts" {
  for_each                     = local.services
  security_group_id            = aws_security_group.hosts.id
  description                  = "The ${each.key} service from the other hosts (the agent calls the model and MCP hosts)"
  referenced_security_group_id = aws_security_group.hosts.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "hosts_https" {
  security_group_id = aws_security_group.hosts.id
  description       = "HTTPS out: model providers, S3, SSM, the artifact"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "hosts_postgres" {
  security_group_id = aws_security_group.hosts.id
  description       = "PostgreSQL (Supabase or any with pgvector)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 6543
}

resource "aws_vpc_security_group_egress_rule" "between_hosts" {
  for_each                     = local.services
  security_group_id            = aws_security_group.hosts.id
  description                  = "To the ${each.key} service on the other hosts"
  referenced_security_group_id = aws_security_group.hosts.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "host" {
  for_each           = local.hosts
  name               = "${local.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_instance_profile" "host" {
  for_each = local.hosts
  name     = "${local.name}-${each.key}"
  role     = aws_iam_role.host[each.key].name
}

# Every host: its own secrets and the release tarball, nothing else.
data "aws_iam_policy_document" "host" {
  for_each = local.hosts
  statement {
    sid       = "OwnSecrets"
    actions   = ["ssm:GetParametersByPath", "ssm:GetParameters"]
    resources = ["arn:aws:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${local.ssm_prefix}/${local.units[each.key]}/*", "arn:aws:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter${local.ssm_prefix}/${local.units[each.key]}"]
  }
  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "ReleaseTarball"
    actions   = ["s3:GetObject"]
    resources = ["arn:aws:s3:::${var.artifact_bucket}/${var.artifact_key}"]
  }
}

resource "aws_iam_role_policy" "host" {
  for_each = local.hosts
  name     = "isa-host"
  role     = aws_iam_role.host[each.key].id
  policy   = data.aws_iam_policy_document.host[each.key].json
}

# The MCP host alone touches the files bucket, and only users' files (users/*) and their direct
# uploads in progress (uploads/*).
data "aws_iam_policy_document" "files" {
  statement {
    sid       = "UsersObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${aws_s3_bucket.files.arn}/users/*", "${aws_s3_bucket.files.arn}/uploads/*"]
  }
  statement {
    sid       = "ListUsersObjects"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.files.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["users/*", "uploads/*"]
    }
  }
}

resource "aws_iam_role_policy" "files" {
  name   = "isa-files"
  role   = aws_iam_role.host["mcp"].id
  policy = data.aws_iam_policy_document.files.json
}

resource "aws_instance" "host" {
  for_each               = local.hosts
  ami                    = var.ami_id
  instance_type          = var.instance_types[each.key]
  subnet_id              = local.host_subnets[local.host_zone[each.key]]
  private_ip             = local.host_ip[each.key]
  vpc_security_group_ids = [aws_security_group.hosts.id]
  iam_instance_profile   = aws_iam_instance_profile.host[each.key].name
  monitoring             = var.detailed_monitoring
  ebs_optimized          = true
  # A new tarball (artifact_key) replaces the host: deploy/README.md says how to roll it out.
  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/user-data.sh.tftpl", {
    unit            = local.units[each.key]
    artifact_bucket = var.artifact_bucket
    artifact_key    = var.artifact_key
    ssm_prefix      = local.ssm_prefix
    settings        = local.settings[each.key]
  })
  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }
  root_block_device {
    encrypted   = true
    volume_size = 30
  }
  tags = { Name = "${local.name}-${each.key}" }
}
