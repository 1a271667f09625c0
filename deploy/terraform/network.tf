# Security groups and service discovery. Who may talk to whom:
#   webserver_allowed_cidrs -> (load balancer :443 ->) webserver :3000
#   webserver, daemon       -> code location :4000 (gRPC, Cloud Map DNS totesys-code.<name>.internal)
#   every task              -> databases (database_cidr_blocks : database_ports), AWS APIs :443
# Run tasks launched by the EcsRunLauncher reuse the daemon's subnets and security group
# (use_current_ecs_task_config in deploy/dagster.ecs.yaml), so the daemon's group admits what the
# runs need: the lake (S3) and the three databases.

resource "aws_security_group" "webserver" {
  name_prefix = "${var.name}-webserver-"
  description = "Dagster webserver: UI from the allowed CIDRs only"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "daemon" {
  name_prefix = "${var.name}-daemon-"
  description = "Dagster daemon and its run tasks: no inbound traffic"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "code" {
  name_prefix = "${var.name}-code-"
  description = "totesys code location: gRPC from the webserver and the daemon"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  task_security_groups = {
    webserver = aws_security_group.webserver.id
    daemon    = aws_security_group.daemon.id
    code      = aws_security_group.code.id
  }

  # (task, database port, CIDR) for every database egress rule
  database_egress = {
    for item in setproduct(keys(local.task_security_groups), var.database_ports, local.database_cidr_blocks) :
    "${item[0]}-${item[1]}-${item[2]}" => { task = item[0], port = item[1], cidr = item[2] }
  }
}

# --- inbound -------------------------------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "webserver_from_allowed_cidrs" {
  for_each          = var.webserver_certificate_arn == null ? toset(var.webserver_allowed_cidrs) : toset([])
  security_group_id = aws_security_group.webserver.id
  description       = "Dagster UI from an allowed CIDR"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.webserver_port
  to_port           = local.webserver_port
}

resource "aws_vpc_security_group_ingress_rule" "webserver_from_load_balancer" {
  count                        = var.webserver_certificate_arn == null ? 0 : 1
  security_group_id            = aws_security_group.webserver.id
  description                  = "Dagster UI from the load balancer"
  referenced_security_group_id = aws_security_group.load_balancer[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.webserver_port
  to_port                      = local.webserver_port
}

resource "aws_vpc_security_group_ingress_rule" "code_from_webserver" {
  security_group_id            = aws_security_group.code.id
  description                  = "gRPC from the Dagster webserver"
  referenced_security_group_id = aws_security_group.webserver.id
  ip_protocol                  = "tcp"
  from_port                    = local.code_server_port
  to_port                      = local.code_server_port
}

resource "aws_vpc_security_group_ingress_rule" "code_from_daemon" {
  security_group_id            = aws_security_group.code.id
  description                  = "gRPC from the Dagster daemon"
  referenced_security_group_id = aws_security_group.daemon.id
  ip_protocol                  = "tcp"
  from_port                    = local.code_server_port
  to_port                      = local.code_server_port
}

# --- outbound ------------------------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "https" {
  for_each          = local.task_security_groups
  security_group_id = each.value
  description       = "HTTPS to the AWS APIs (ECR, S3, Logs, Secrets Manager, SNS, ECS) and webhook alerts"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "databases" {
  for_each          = local.database_egress
  security_group_id = local.task_security_groups[each.value.task]
  description       = "PostgreSQL: Dagster storage, totesys source, warehouse"
  cidr_ipv4         = each.value.cidr
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
}

resource "aws_vpc_security_group_egress_rule" "to_code_server" {
  for_each = {
    webserver = aws_security_group.webserver.id
    daemon    = aws_security_group.daemon.id
  }
  security_group_id            = each.value
  description                  = "gRPC to the code location"
  referenced_security_group_id = aws_security_group.code.id
  ip_protocol                  = "tcp"
  from_port                    = local.code_server_port
  to_port                      = local.code_server_port
}

# --- the code location's DNS name ----------------------------------------------------------------

resource "aws_service_discovery_private_dns_namespace" "this" {
  name        = local.service_namespace
  description = "${var.name}: ECS service discovery"
  vpc         = var.vpc_id
}

resource "aws_service_discovery_service" "code" {
  name = local.code_service_name

  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.this.id
    routing_policy = "MULTIVALUE"

    dns_records {
      type = "A"
      ttl  = 10
    }
  }

  health_check_custom_config {
    failure_threshold = 1
  }
}
