resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "The load balancer: HTTPS and HTTP (redirected) from anywhere"
  vpc_id      = aws_vpc.main.id
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  #checkov:skip=CKV_AWS_260:Port 80 is open to everyone only to answer with a redirect to HTTPS
  for_each          = toset(["80", "443"])
  security_group_id = aws_security_group.alb.id
  description       = "HTTP${each.key == "443" ? "S" : ""} from anywhere"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.key)
  to_port           = tonumber(each.key)
}

resource "aws_vpc_security_group_egress_rule" "alb_to_services" {
  for_each                     = local.services
  security_group_id            = aws_security_group.alb.id
  description                  = "To the ${each.key} service"
  referenced_security_group_id = aws_security_group.hosts.id
  ip_protocol                  = "tcp"
  from_port                    = each.value.port
  to_port                      = each.value.port
}

resource "aws_lb" "main" {
  #checkov:skip=CKV_AWS_91:Access logs are on when the operator names their bucket (access_logs_bucket), which needs a policy for the region's ELB account
  #checkov:skip=CKV2_AWS_28:A WAF web ACL is the account's choice and cost; deploy/README.md says how to attach one
  name                       = local.name
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = aws_subnet.public[*].id
  drop_invalid_header_fields = true
  enable_deletion_protection = var.environment == "prod"
  # Streams (chat, MCP) stay open while they have something to say.
  idle_timeout = 300
  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = local.name
    enabled = var.access_logs_bucket != ""
  }
}

resource "aws_lb_target_group" "service" {
  for_each             = local.services
  name                 = "${local.name}-${each.key}"
  port                 = each.value.port
  protocol             = "HTTP"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = var.deregistration_delay
  health_check {
    path                = each.value.health_check
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "service" {
  for_each         = local.services
  target_group_arn = aws_lb_target_group.service[each.key].arn
  target_id        = aws_instance.host[each.value.host].id
  port             = each.value.port
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.main.arn
  port              = 80
  protocol          = "HTTP"
  default_action {
    type = "redirect"
    redirect {
      protocol    = "HTTPS"
      port        = "443"
      status_code = "HTTP_301"
    }
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.service[local.routes.default].arn
  }
}

resource "aws_lb_listener_rule" "blocked" {
  listener_arn = aws_lb_listener.https.arn
  priority     = local.routes.blocked.priority
  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = jsonencode({ error = { code = "not_found", message = "no such route" } })
    }
  }
  condition {
    path_pattern {
      values = local.routes.blocked.paths
    }
  }
}

resource "aws_lb_listener_rule" "route" {
  for_each     = local.rules
  listener_arn = aws_lb_listener.https.arn
  priority     = each.value.priority
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.service[each.value.service].arn
  }
  condition {
    path_pattern {
      values = each.value.paths
    }
  }
}
