# The routing table is deploy/routes.json, shared with the local load balancer and checked by
# deploy/routes.py: the target groups, their health checks and the listener rules come from it.
locals {
  routes   = jsondecode(file("${path.module}/../routes.json"))
  services = local.routes.services
  rules    = { for rule in local.routes.rules : tostring(rule.priority) => rule }
  hosts    = toset([for service in values(local.services) : service.host])
  name     = "isa-${var.environment}"
}
