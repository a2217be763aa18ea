variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Name of this deployment (prod, staging); prefixes every resource and the SSM path."
  type        = string
  default     = "prod"
}

variable "zone_suffixes" {
  description = "The two availability zones of the region, by their letter."
  type        = list(string)
  default     = ["a", "b"]
  validation {
    condition     = length(var.zone_suffixes) == 2
    error_message = "Name exactly two zones."
  }
}

variable "vpc_cidr" {
  description = "The VPC's address range; subnets are carved from it."
  type        = string
  default     = "10.20.0.0/16"
}

variable "private_hosts" {
  description = "Put the three hosts in private subnets behind a NAT gateway (the balancer stays public)."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "ami_id" {
  description = "Image of the three hosts: Debian 12 or Amazon Linux 2023 (x86_64), with the AWS CLI."
  type        = string
}

variable "instance_types" {
  description = "Instance type of each host."
  type        = object({ mcp = string, model = string, agent = string })
  default     = { mcp = "t3.large", model = "t3.medium", agent = "t3.medium" }
}

variable "detailed_monitoring" {
  description = "One-minute CloudWatch metrics for the hosts (EC2 detailed monitoring)."
  type        = bool
  default     = true
}

variable "artifact_bucket" {
  description = "Bucket holding the release tarball (bin/isa-mcp, bin/isa-model, bin/isa-agent, systemd/)."
  type        = string
}

variable "artifact_key" {
  description = "Key of the release tarball in artifact_bucket; change it to roll out a new build."
  type        = string
}

variable "files_bucket_name" {
  description = "Name of the bucket of users' files."
  type        = string
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted file version is kept (for restores)."
  type        = number
  default     = 30
}

variable "public_url" {
  description = "The URL clients use (https://isa.example.com): the resource named to OAuth clients."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarms notify; empty for none."
  type        = string
  default     = ""
}

variable "deregistration_delay" {
  description = "Seconds a deregistering target keeps its requests; the units stop within this plus the servers' grace."
  type        = number
  default     = 30
}

variable "access_logs_bucket" {
  description = "Bucket the load balancer writes its access logs to (its policy must let the region's ELB account write); empty for none."
  type        = string
  default     = ""
}
