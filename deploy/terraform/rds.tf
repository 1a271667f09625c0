# Optional RDS PostgreSQL for Dagster's storage (create_rds = true). Its master password is generated
# and kept by RDS in a Secrets Manager secret (manage_master_user_password): it never passes through
# Terraform, and the tasks receive it as DAGSTER_PG_PASSWORD from that secret's "password" key.
# TLS is enforced (rds.force_ssl), matching sslmode: require in deploy/dagster.ecs.yaml.

resource "aws_db_subnet_group" "storage" {
  count       = var.create_rds ? 1 : 0
  name_prefix = "${var.name}-dagster-"
  description = "${var.name}: Dagster storage"
  subnet_ids  = var.db_subnet_ids != null ? var.db_subnet_ids : var.private_subnet_ids
}

resource "aws_db_parameter_group" "storage" {
  count       = var.create_rds ? 1 : 0
  name_prefix = "${var.name}-dagster-"
  family      = "postgres${var.rds_engine_version}"
  description = "${var.name}: Dagster storage, TLS only"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "5000"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "storage" {
  count       = var.create_rds ? 1 : 0
  name_prefix = "${var.name}-dagster-db-"
  description = "Dagster storage: PostgreSQL from the Dagster tasks only"
  vpc_id      = var.vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "storage_from_tasks" {
  for_each                     = var.create_rds ? local.task_security_groups : {}
  security_group_id            = aws_security_group.storage[0].id
  description                  = "PostgreSQL from the Dagster ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = var.storage_port
  to_port                      = var.storage_port
}

resource "aws_db_instance" "storage" {
  #checkov:skip=CKV_AWS_157:Multi-AZ is var.rds_multi_az (default off: Dagster's run history is backed up daily and the stack tolerates a restore); turn it on for production HA.
  #checkov:skip=CKV_AWS_118:Enhanced monitoring needs a monitoring role and costs extra; Performance Insights and the CloudWatch log exports below cover the Dagster storage.
  count      = var.create_rds ? 1 : 0
  identifier = "${var.name}-dagster"

  engine                     = "postgres"
  engine_version             = var.rds_engine_version
  auto_minor_version_upgrade = true
  instance_class             = var.rds_instance_class
  allocated_storage          = var.rds_allocated_storage
  max_allocated_storage      = var.rds_max_allocated_storage
  storage_type               = "gp3"
  storage_encrypted          = true
  kms_key_id                 = aws_kms_key.this.arn
  multi_az                   = var.rds_multi_az

  db_name                             = var.storage_db
  username                            = var.storage_username
  port                                = var.storage_port
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = aws_kms_key.this.arn
  iam_database_authentication_enabled = true

  db_subnet_group_name   = aws_db_subnet_group.storage[0].name
  parameter_group_name   = aws_db_parameter_group.storage[0].name
  vpc_security_group_ids = [aws_security_group.storage[0].id]
  publicly_accessible    = false

  backup_retention_period   = var.rds_backup_retention_days
  copy_tags_to_snapshot     = true
  deletion_protection       = var.deletion_protection
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-dagster-final"

  performance_insights_enabled    = var.rds_performance_insights
  performance_insights_kms_key_id = var.rds_performance_insights ? aws_kms_key.this.arn : null
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]

  depends_on = [aws_cloudwatch_log_group.storage]
}

# The log exports' groups, created here so they get the stack's retention and key (RDS would
# otherwise create them unencrypted and kept forever).
resource "aws_cloudwatch_log_group" "storage" {
  for_each          = var.create_rds ? toset(["postgresql", "upgrade"]) : toset([])
  name              = "/aws/rds/instance/${var.name}-dagster/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
}
