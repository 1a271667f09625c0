# ECS cluster, the three task definitions and services of deploy/README.md, all from the one image
# deploy/Dockerfile builds (pushed to the ECR repository in ecr.tf):
#   dagster-webserver  dagster-webserver on :3000, var.webserver_count tasks
#   dagster-daemon     init_instance.sh, then dagster-daemon; exactly one task, never two
#   totesys-code       the image's CMD: the gRPC code server on :4000 (Cloud Map: totesys-code.<name>.internal)
# Run tasks are not declared here: the EcsRunLauncher in the daemon registers their task
# definitions (totesys-run_*) from the code location's image, with the execution and run roles and
# the runs log group below.

resource "aws_ecs_cluster" "this" {
  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

locals {
  log_configuration = {
    for service in [local.webserver_service_name, local.daemon_service_name, local.code_service_name] :
    service => {
      logDriver = "awslogs"
      options = {
        "awslogs-group"         = aws_cloudwatch_log_group.services.name
        "awslogs-region"        = var.region
        "awslogs-stream-prefix" = service
      }
    }
  }
}

# --- webserver -----------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "webserver" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME and the temp dir at run time (instance files, compute-log staging); a read-only root file system breaks it.
  family                   = "${var.name}-${local.webserver_service_name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.webserver_cpu
  memory                   = var.webserver_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.webserver.arn

  container_definitions = jsonencode([
    {
      name             = local.webserver_service_name
      image            = local.image
      essential        = true
      command          = ["dagster-webserver", "-h", "0.0.0.0", "-p", tostring(local.webserver_port), "-w", "${local.dagster_home_ecs}/workspace.yaml"]
      portMappings     = [{ containerPort = local.webserver_port, protocol = "tcp" }]
      environment      = concat(local.common_environment, local.workspace_environment)
      secrets          = local.storage_secrets
      logConfiguration = local.log_configuration[local.webserver_service_name]
      healthCheck = {
        command     = ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${local.webserver_port}/server_info', timeout=5)"]
        interval    = 30
        timeout     = 10
        retries     = 3
        startPeriod = 60
      }
    },
  ])

  lifecycle {
    precondition {
      condition     = var.create_rds || var.storage_host != null
      error_message = "create_rds = false needs storage_host (your own Dagster storage database)."
    }
  }
}

resource "aws_ecs_service" "webserver" {
  name                   = local.webserver_service_name
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.webserver.arn
  desired_count          = var.webserver_count
  launch_type            = "FARGATE"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.webserver.id]
    assign_public_ip = var.assign_public_ip
  }

  dynamic "load_balancer" {
    for_each = var.webserver_certificate_arn == null ? [] : [1]
    content {
      target_group_arn = aws_lb_target_group.webserver[0].arn
      container_name   = local.webserver_service_name
      container_port   = local.webserver_port
    }
  }

  # The UI needs the code location to list its jobs.
  depends_on = [aws_ecs_service.code, aws_lb_listener.https]
}

# --- daemon --------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "daemon" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME and the temp dir at run time (instance files, compute-log staging); a read-only root file system breaks it.
  family                   = "${var.name}-${local.daemon_service_name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.daemon_cpu
  memory                   = var.daemon_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.daemon.arn

  container_definitions = jsonencode([
    {
      name             = local.daemon_service_name
      image            = local.image
      essential        = true
      command          = ["sh", "-c", "sh /opt/dagster/init_instance.sh && exec dagster-daemon run -w ${local.dagster_home_ecs}/workspace.yaml"]
      environment      = concat(local.common_environment, local.workspace_environment, local.project_environment)
      secrets          = local.storage_secrets
      logConfiguration = local.log_configuration[local.daemon_service_name]
    },
  ])
}

resource "aws_ecs_service" "daemon" {
  name                   = local.daemon_service_name
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.daemon.arn
  launch_type            = "FARGATE"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  # Exactly one daemon, also during a deployment: the old task stops before the new one starts
  # (two daemons on one instance would evaluate every sensor and schedule twice).
  desired_count                      = 1
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = 0

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.daemon.id]
    assign_public_ip = var.assign_public_ip
  }

  depends_on = [aws_ecs_service.code]
}

# --- code location -------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "code" {
  #checkov:skip=CKV_AWS_336:Dagster writes under $DAGSTER_HOME and the temp dir at run time (instance files, compute-log staging); a read-only root file system breaks it.
  family                   = "${var.name}-${local.code_service_name}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.code_cpu
  memory                   = var.code_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.code.arn

  # No command: the image's CMD is the code server (deploy/Dockerfile).
  container_definitions = jsonencode([
    {
      name             = local.code_service_name
      image            = local.image
      essential        = true
      portMappings     = [{ containerPort = local.code_server_port, protocol = "tcp" }]
      environment      = concat(local.common_environment, local.project_environment, local.code_environment)
      secrets          = local.code_secrets
      logConfiguration = local.log_configuration[local.code_service_name]
      healthCheck = {
        command     = ["CMD", "dagster", "api", "grpc-health-check", "-p", tostring(local.code_server_port)]
        interval    = 30
        timeout     = 10
        retries     = 3
        startPeriod = 120
      }
    },
  ])
}

resource "aws_ecs_service" "code" {
  name                   = local.code_service_name
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.code.arn
  desired_count          = 1
  launch_type            = "FARGATE"
  enable_execute_command = false
  propagate_tags         = "SERVICE"

  # One version of the code at a time: the old server stops before the new one starts.
  deployment_maximum_percent         = 100
  deployment_minimum_healthy_percent = 0

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.code.id]
    assign_public_ip = var.assign_public_ip
  }

  service_registries {
    registry_arn = aws_service_discovery_service.code.arn
  }
}
