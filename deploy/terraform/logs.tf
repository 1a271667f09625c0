# CloudWatch log groups, encrypted with the stack's key.

# webserver, daemon and code location (stream prefix = service name).
resource "aws_cloudwatch_log_group" "services" {
  name              = local.services_log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}

# DAGSTER_ECS_LOG_GROUP: the EcsRunLauncher's run tasks log here (stream prefix = task family).
resource "aws_cloudwatch_log_group" "runs" {
  name              = local.runs_log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}
