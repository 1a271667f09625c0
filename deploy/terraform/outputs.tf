# What the Dagster configuration names, by the environment variable it is known as there
# (deploy/dagster.ecs.yaml, deploy/secrets.md, deploy/README.md), plus what a user needs next.

output "ecr_repository_url" {
  description = "Push the deploy/Dockerfile image here, tagged var.image_tag."
  value       = aws_ecr_repository.this.repository_url
}

output "image" {
  description = "DAGSTER_CURRENT_IMAGE: the image every task runs."
  value       = local.image
}

output "ecs_cluster_name" {
  description = "ECS cluster of the services and run tasks."
  value       = aws_ecs_cluster.this.name
}

output "ecs_service_names" {
  description = "The three ECS services (for `aws ecs update-service --force-new-deployment`)."
  value = {
    webserver = aws_ecs_service.webserver.name
    daemon    = aws_ecs_service.daemon.name
    code      = aws_ecs_service.code.name
  }
}

output "lake_bucket" {
  description = "The lake bucket (DAGSTER_COMPUTE_LOG_BUCKET too)."
  value       = aws_s3_bucket.lake.bucket
}

output "TOTESYS_LAKE_URL" {
  description = "s3://<bucket>/<lake_prefix>"
  value       = local.lake_url
}

output "DAGSTER_COMPUTE_LOG_BUCKET" {
  description = "Bucket of the step logs."
  value       = aws_s3_bucket.lake.bucket
}

output "DAGSTER_COMPUTE_LOG_PREFIX" {
  description = "Prefix of the step logs (expired by the bucket's lifecycle rule)."
  value       = var.compute_log_prefix
}

output "DAGSTER_ECS_EXECUTION_ROLE_ARN" {
  description = "Execution role of the services and run tasks."
  value       = aws_iam_role.execution.arn
}

output "DAGSTER_ECS_TASK_ROLE_ARN" {
  description = "Task role of the run tasks."
  value       = aws_iam_role.run.arn
}

output "DAGSTER_ECS_LOG_GROUP" {
  description = "Log group of the run tasks."
  value       = aws_cloudwatch_log_group.runs.name
}

output "services_log_group" {
  description = "Log group of the webserver, daemon and code location (stream prefix = service name)."
  value       = aws_cloudwatch_log_group.services.name
}

output "TOTESYS_ALERT_SNS_TOPIC_ARN" {
  description = "The alert topic (failed runs, and the daemon or code location not running)."
  value       = aws_sns_topic.alerts.arn
}

output "TOTESYS_DB_URL_SECRET_ARN" {
  description = "Secret holding TOTESYS_DB_URL: put its value after apply."
  value       = aws_secretsmanager_secret.source_db_url.arn
}

output "WAREHOUSE_DB_URL_SECRET_ARN" {
  description = "Secret holding WAREHOUSE_DB_URL: put its value after apply."
  value       = aws_secretsmanager_secret.warehouse_db_url.arn
}

output "DAGSTER_PG_PASSWORD_SECRET_ARN" {
  description = "valueFrom of DAGSTER_PG_PASSWORD (the RDS-managed secret's password key, or your own secret)."
  value       = local.storage_password_value_from
}

output "alert_webhook_secret_arn" {
  description = "Secret holding TOTESYS_ALERT_WEBHOOK_URL (create_alert_webhook_secret), or null."
  value       = var.create_alert_webhook_secret ? aws_secretsmanager_secret.alert_webhook[0].arn : null
}

output "secrets_to_fill" {
  description = "Secrets whose values you put after apply (`aws secretsmanager put-secret-value`)."
  value = compact([
    aws_secretsmanager_secret.source_db_url.name,
    aws_secretsmanager_secret.warehouse_db_url.name,
    var.create_rds ? "" : aws_secretsmanager_secret.storage_password[0].name,
    var.create_alert_webhook_secret ? aws_secretsmanager_secret.alert_webhook[0].name : "",
  ])
}

output "DAGSTER_PG_HOST" {
  description = "Host of the Dagster storage database."
  value       = local.storage_host
}

output "DAGSTER_PG_PORT" {
  description = "Port of the Dagster storage database."
  value       = local.storage_port
}

output "DAGSTER_PG_DB" {
  description = "Database of the Dagster storage."
  value       = var.storage_db
}

output "DAGSTER_PG_USERNAME" {
  description = "User of the Dagster storage."
  value       = var.storage_username
}

output "TOTESYS_CODE_SERVER_HOST" {
  description = "Where workspace.yaml finds the code server (Cloud Map DNS)."
  value       = local.code_server_host
}

output "TOTESYS_CODE_SERVER_PORT" {
  description = "Port of the code server."
  value       = local.code_server_port
}

output "webserver_url" {
  description = "The load balancer's HTTPS address (point your DNS name at it), or null without one: then reach the webserver task's private IP on port 3000."
  value       = local.create_load_balancer ? "https://${aws_lb.webserver[0].dns_name}" : null
}

output "kms_key_arn" {
  description = "The stack's KMS key."
  value       = aws_kms_key.this.arn
}

output "ecs_run_launcher" {
  description = "What run_launcher.config in deploy/dagster.ecs.yaml must say for the daemon's permissions to fit (a test keeps them equal)."
  value = {
    container_name         = local.run_container_name
    task_definition_prefix = local.run_task_definition_prefix
  }
}
