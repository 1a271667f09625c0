# One customer-managed key for the stack's data at rest: the lake bucket, the secrets, the alert
# topic, the log groups, the ECR repository and the RDS instance. Rotated yearly by AWS.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy, not an IAM policy: "*" there is this key alone, and the account-root statement is AWS's default that keeps the key manageable.
  #checkov:skip=CKV_AWS_111:A key policy, not an IAM policy: "*" there is this key alone; the service statements are bound to this account's log groups / alarms by their conditions.
  #checkov:skip=CKV_AWS_356:A key policy, not an IAM policy: in a key policy "Resource": "*" means this key, and AWS accepts nothing else there.
  # The key policy's owner statement. AWS's default key policy: it delegates access to IAM in this
  # account, and without it the key can become unmanageable (AWS then has to be asked to recover
  # it). In a key policy "Resource": "*" means "this key". This is the module's one "*" action;
  # every IAM policy below grants named kms actions only, on this key only.
  statement {
    sid       = "AccountOwnsTheKey"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts this stack's log groups (and only those) with the key.
  statement {
    sid = "CloudWatchLogsUseTheKey"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values = [
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/ecs/${var.name}/*",
        "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:/aws/rds/instance/${var.name}-dagster/*",
      ]
    }
  }

  # CloudWatch alarms publish to the encrypted alert topic.
  statement {
    sid       = "CloudWatchAlarmsPublishToTheTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: lake bucket, secrets, alert topic, logs, ECR, Dagster storage"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}
