output "load_balancer_dns_name" {
  description = "Point the public name (public_url) at this, as a CNAME or an alias record."
  value       = aws_lb.main.dns_name
}

output "urls" {
  description = "Where each service answers through the balancer."
  value = {
    mcp    = "${var.public_url}/mcp"
    users  = "${var.public_url}/api/users"
    events = "${var.public_url}/api/events"
    model  = "${var.public_url}/api/v1"
    docs   = "${var.public_url}/docs"
    agent  = "${var.public_url}/api/chat"
  }
}

output "files_bucket" {
  description = "The bucket of users' files."
  value       = aws_s3_bucket.files.bucket
}

output "ssm_prefix" {
  description = "Secrets go under {prefix}/{isa-mcp,isa-model,isa-agent}/NAME as SecureStrings."
  value       = local.ssm_prefix
}
