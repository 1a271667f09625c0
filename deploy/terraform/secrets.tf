# Secrets Manager secrets for the credentials in deploy/secrets.md. Terraform creates the secrets
# only, never a version: the values are put by you after `terraform apply`, so they are in no
# variable, plan or state (README.md, "Put the secret values"):
#
#   aws secretsmanager put-secret-value --secret-id <name>/source-url    --secret-string 'postgresql://…'
#   aws secretsmanager put-secret-value --secret-id <name>/warehouse-url --secret-string 'postgresql://…'
#
# The Dagster storage password is RDS's own managed secret when create_rds = true (RDS generates and
# keeps it; nobody types it), else <name>/dagster-storage-password below, which you fill the same way.

resource "aws_secretsmanager_secret" "source_db_url" {
  #checkov:skip=CKV2_AWS_57:A database URL owned by the totesys team; rotating it needs their database's rotation Lambda. Rotate with put-secret-value, then force a new deployment (README.md).
  name        = "${var.name}/source-url"
  description = "TOTESYS_DB_URL: the totesys source database URL with its password (read-only user)."
  kms_key_id  = aws_kms_key.this.arn
}

resource "aws_secretsmanager_secret" "warehouse_db_url" {
  #checkov:skip=CKV2_AWS_57:A database URL owned by the warehouse; rotating it needs its database's rotation Lambda. Rotate with put-secret-value, then force a new deployment (README.md).
  name        = "${var.name}/warehouse-url"
  description = "WAREHOUSE_DB_URL: the warehouse database URL with its password."
  kms_key_id  = aws_kms_key.this.arn
}

resource "aws_secretsmanager_secret" "storage_password" {
  #checkov:skip=CKV2_AWS_57:The password of a database this module does not manage (create_rds = false); rotate it there, put the new value, force a new deployment.
  count       = var.create_rds ? 0 : 1
  name        = "${var.name}/dagster-storage-password"
  description = "DAGSTER_PG_PASSWORD: password of the Dagster storage database (a plain string)."
  kms_key_id  = aws_kms_key.this.arn
}

resource "aws_secretsmanager_secret" "alert_webhook" {
  #checkov:skip=CKV2_AWS_57:A webhook URL issued by the chat tool (e.g. Slack); it is replaced there, not rotated by AWS.
  count       = var.create_alert_webhook_secret ? 1 : 0
  name        = "${var.name}/alert-webhook"
  description = "TOTESYS_ALERT_WEBHOOK_URL: incoming-webhook URL for failed-run alerts."
  kms_key_id  = aws_kms_key.this.arn
}
