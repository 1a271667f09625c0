# The names and environment the Dagster configuration expects (deploy/dagster.ecs.yaml,
# deploy/workspace.yaml, deploy/secrets.md, deploy/README.md). Everything else in this folder builds
# the AWS resources these locals point at.

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  lake_bucket_name = coalesce(var.lake_bucket_name, "${var.name}-lake-${local.account_id}")

  # ECS names. The three services follow deploy/README.md; the code location is found by the
  # webserver and the daemon through Cloud Map DNS as <code_service_name>.<namespace>.
  cluster_name           = var.name
  webserver_service_name = "dagster-webserver"
  daemon_service_name    = "dagster-daemon"
  code_service_name      = "totesys-code"
  service_namespace      = "${var.name}.internal"
  code_server_host       = "${local.code_service_name}.${local.service_namespace}"
  code_server_port       = 4000
  webserver_port         = 3000

  # Task definitions the EcsRunLauncher registers are named <prefix>_<hashes>: the prefix is
  # run_launcher.config.task_definition_prefix in deploy/dagster.ecs.yaml, so the daemon may run
  # only those task definitions.
  run_task_definition_prefix = "totesys-run"
  # run_launcher.config.container_name in deploy/dagster.ecs.yaml
  run_container_name = "run"

  # The image copies deploy/dagster.ecs.yaml to this DAGSTER_HOME (deploy/Dockerfile).
  dagster_home_ecs = "/opt/dagster/ecs"
  image            = "${aws_ecr_repository.this.repository_url}:${var.image_tag}"

  services_log_group = "/ecs/${var.name}/services"
  runs_log_group     = "/ecs/${var.name}/runs"

  storage_host = var.create_rds ? aws_db_instance.storage[0].address : var.storage_host
  storage_port = var.create_rds ? aws_db_instance.storage[0].port : var.storage_port

  # The storage password: RDS keeps it in a secret it manages (a JSON document with a "password"
  # key); with your own database it is a plain string in <name>/dagster-storage-password.
  storage_secret_arn = var.create_rds ? aws_db_instance.storage[0].master_user_secret[0].secret_arn : aws_secretsmanager_secret.storage_password[0].arn
  storage_password_value_from = var.create_rds ? "${local.storage_secret_arn}:password::" : local.storage_secret_arn

  # Every secret a task may read (the execution role resolves them; nothing else can).
  secret_arns = compact([
    aws_secretsmanager_secret.source_db_url.arn,
    aws_secretsmanager_secret.warehouse_db_url.arn,
    local.storage_secret_arn,
    var.create_alert_webhook_secret ? aws_secretsmanager_secret.alert_webhook[0].arn : "",
  ])

  lake_url = "s3://${aws_s3_bucket.lake.bucket}/${var.lake_prefix}"

  database_cidr_blocks = var.database_cidr_blocks != null ? var.database_cidr_blocks : [data.aws_vpc.this.cidr_block]

  # --- container environment --------------------------------------------------------------------

  # Every container: instance storage (dagster.ecs.yaml), compute logs, region, and the run
  # launcher's settings (any process that loads the instance's run launcher resolves them: the
  # daemon launches and monitors runs, the webserver terminates them).
  common_environment = [
    { name = "DAGSTER_HOME", value = local.dagster_home_ecs },
    { name = "AWS_REGION", value = var.region },
    { name = "DAGSTER_PG_USERNAME", value = var.storage_username },
    { name = "DAGSTER_PG_HOST", value = local.storage_host },
    { name = "DAGSTER_PG_PORT", value = tostring(local.storage_port) },
    { name = "DAGSTER_PG_DB", value = var.storage_db },
    { name = "DAGSTER_COMPUTE_LOG_BUCKET", value = aws_s3_bucket.lake.bucket },
    { name = "DAGSTER_COMPUTE_LOG_PREFIX", value = var.compute_log_prefix },
    { name = "DAGSTER_ECS_EXECUTION_ROLE_ARN", value = aws_iam_role.execution.arn },
    { name = "DAGSTER_ECS_TASK_ROLE_ARN", value = aws_iam_role.run.arn },
    { name = "DAGSTER_ECS_LOG_GROUP", value = aws_cloudwatch_log_group.runs.name },
    { name = "DAGSTER_PG_PASSWORD_SECRET_ARN", value = local.storage_password_value_from },
    { name = "TOTESYS_DB_URL_SECRET_ARN", value = aws_secretsmanager_secret.source_db_url.arn },
    { name = "WAREHOUSE_DB_URL_SECRET_ARN", value = aws_secretsmanager_secret.warehouse_db_url.arn },
  ]

  # The project's own settings; the daemon copies them into every run task (env_vars in
  # dagster.ecs.yaml), the code location evaluates sensors with them.
  # Every name in env_vars must be set in the daemon: the launcher refuses to start a run otherwise.
  project_environment = [
    { name = "TOTESYS_LAKE_URL", value = local.lake_url },
    { name = "TOTESYS_START_DATE", value = var.start_date },
  ]

  # webserver and daemon: where workspace.yaml finds the code server.
  workspace_environment = [
    { name = "TOTESYS_CODE_SERVER_HOST", value = local.code_server_host },
    { name = "TOTESYS_CODE_SERVER_PORT", value = tostring(local.code_server_port) },
  ]

  # code location: its own image for the run launcher, and the alert channels (the code server
  # evaluates the run_failure_alerts sensor).
  code_environment = concat(
    [
      { name = "DAGSTER_CURRENT_IMAGE", value = local.image },
      { name = "TOTESYS_ALERT_SNS_TOPIC_ARN", value = aws_sns_topic.alerts.arn },
    ],
    var.webserver_url == null ? [] : [{ name = "DAGSTER_WEBSERVER_URL", value = var.webserver_url }],
  )

  storage_secrets = [
    { name = "DAGSTER_PG_PASSWORD", valueFrom = local.storage_password_value_from },
  ]

  code_secrets = concat(
    local.storage_secrets,
    [
      { name = "TOTESYS_DB_URL", valueFrom = aws_secretsmanager_secret.source_db_url.arn },
      { name = "WAREHOUSE_DB_URL", valueFrom = aws_secretsmanager_secret.warehouse_db_url.arn },
    ],
    var.create_alert_webhook_secret ? [{ name = "TOTESYS_ALERT_WEBHOOK_URL", valueFrom = aws_secretsmanager_secret.alert_webhook[0].arn }] : [],
  )
}
