# Optional HTTPS load balancer in front of the webserver (webserver_certificate_arn set). It admits
# only webserver_allowed_cidrs on 443; the webserver then admits only the load balancer. There is no
# port 80 listener at all. Without a certificate nothing here is created and the webserver task
# admits webserver_allowed_cidrs on 3000 directly.

locals {
  create_load_balancer = var.webserver_certificate_arn != null
  load_balancer_public = length(var.public_subnet_ids) > 0
}

resource "aws_security_group" "load_balancer" {
  count       = local.create_load_balancer ? 1 : 0
  name_prefix = "${var.name}-webserver-lb-"
  description = "Dagster UI load balancer: HTTPS from the allowed CIDRs only"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "load_balancer_https" {
  for_each          = local.create_load_balancer ? toset(var.webserver_allowed_cidrs) : toset([])
  security_group_id = aws_security_group.load_balancer[0].id
  description       = "HTTPS from an allowed CIDR"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "load_balancer_to_webserver" {
  count                        = local.create_load_balancer ? 1 : 0
  security_group_id            = aws_security_group.load_balancer[0].id
  description                  = "To the Dagster webserver tasks"
  referenced_security_group_id = aws_security_group.webserver.id
  ip_protocol                  = "tcp"
  from_port                    = local.webserver_port
  to_port                      = local.webserver_port
}

resource "aws_lb" "webserver" {
  #checkov:skip=CKV_AWS_91:Access logs need a separate bucket with the ELB log-delivery policy; the UI is reachable from webserver_allowed_cidrs only and Dagster records who launched what. Add access_logs when required.
  #checkov:skip=CKV2_AWS_28:No WAF: the listener admits webserver_allowed_cidrs only. Attach a web ACL if the UI is ever opened wider.
  count                      = local.create_load_balancer ? 1 : 0
  name                       = "${var.name}-dagster"
  load_balancer_type         = "application"
  internal                   = !local.load_balancer_public
  subnets                    = local.load_balancer_public ? var.public_subnet_ids : var.private_subnet_ids
  security_groups            = [aws_security_group.load_balancer[0].id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
}

resource "aws_lb_target_group" "webserver" {
  count       = local.create_load_balancer ? 1 : 0
  name_prefix = "dag-"
  port        = local.webserver_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id

  health_check {
    path                = "/server_info"
    matcher             = "200"
    interval            = 30
    timeout             = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  count             = local.create_load_balancer ? 1 : 0
  load_balancer_arn = aws_lb.webserver[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.webserver_certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.webserver[0].arn
  }
}
