# IAM roles. Least privilege: each role gets named actions on this stack's resources only. The few
# statements whose resource is "*" are marked AWS_REQUIRES_STAR: those actions support no
# resource-level permissions (AWS service authorization reference), so "*" is the only value IAM
# accepts for them.
#
#   execution  ECS agent: pull the image, write the log groups, resolve the named secrets into env
#              vars (DAGSTER_ECS_EXECUTION_ROLE_ARN: services and run tasks alike)
#   run        run tasks of the EcsRunLauncher (DAGSTER_ECS_TASK_ROLE_ARN): the lake and compute-log
#              prefixes of the lake bucket, nothing else
#   daemon     launches, monitors and stops run tasks
#   webserver  reads step logs, terminates runs
#   code       publishes failed-run alerts to the alert topic

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:*"]
    }
  }
}

locals {
  cluster_arn            = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:cluster/${local.cluster_name}"
  cluster_tasks_arn      = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task/${local.cluster_name}/*"
  run_task_definitions   = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.run_task_definition_prefix}_*:*"
  lake_objects_arn       = "${aws_s3_bucket.lake.arn}/${var.lake_prefix}/*"
  compute_logs_objects   = "${aws_s3_bucket.lake.arn}/${var.compute_log_prefix}/*"
  s3_via_service         = "s3.${var.region}.amazonaws.com"
  secretsmanager_service = "secretsmanager.${var.region}.amazonaws.com"
  sns_via_service        = "sns.${var.region}.amazonaws.com"
}

# --- execution role ------------------------------------------------------------------------------

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-execution-"
  description        = "ECS task execution role of ${var.name}: image pull, logs, secret injection"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  # AWS_REQUIRES_STAR: ecr:GetAuthorizationToken has no resource-level permissions.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PullTheImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:GetDownloadUrlForLayer",
      "ecr:BatchGetImage",
    ]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    sid     = "WriteTheLogGroups"
    actions = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [
      "${aws_cloudwatch_log_group.services.arn}:log-stream:*",
      "${aws_cloudwatch_log_group.runs.arn}:log-stream:*",
    ]
  }

  statement {
    sid       = "ResolveTheNamedSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secret_arns
  }

  statement {
    sid       = "DecryptTheNamedSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.secretsmanager_service]
    }
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- run tasks -----------------------------------------------------------------------------------

resource "aws_iam_role" "run" {
  name_prefix        = "${var.name}-run-"
  description        = "Task role of ${var.name} Dagster run tasks: the lake prefix and step logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "run" {
  statement {
    sid       = "ReadWriteTheLake"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.lake_objects_arn]
  }

  statement {
    sid       = "WriteStepLogs"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.compute_logs_objects]
  }

  # ListBucket on the lake bucket itself, without an s3:prefix condition: S3 answers a GetObject of a
  # missing key with 404 NoSuchKey only to a caller that may list the bucket (403 otherwise), and a
  # GetObject carries no s3:prefix, so a prefix condition would turn every "not there yet" in the
  # lake (totesys_assets/resources/lake/store.py) into an error. The bucket holds only the lake and
  # the step logs; listing shows keys, reading them still needs GetObject above.
  statement {
    sid       = "ListTheLakeBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]
  }

  statement {
    sid       = "UseTheBucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via_service]
    }
  }
}

resource "aws_iam_role_policy" "run" {
  name   = "lake"
  role   = aws_iam_role.run.id
  policy = data.aws_iam_policy_document.run.json
}

# --- daemon --------------------------------------------------------------------------------------

resource "aws_iam_role" "daemon" {
  name_prefix        = "${var.name}-daemon-"
  description        = "Task role of the ${var.name} Dagster daemon: the EcsRunLauncher"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "daemon" {
  statement {
    sid       = "RunOnlyRunTaskDefinitions"
    actions   = ["ecs:RunTask"]
    resources = [local.run_task_definitions]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }

  # RunTask with tags (the launcher tags every run task with its run id).
  statement {
    sid       = "TagRunTasks"
    actions   = ["ecs:TagResource"]
    resources = [local.cluster_tasks_arn]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  # Run monitoring, termination, and use_current_ecs_task_config (the daemon's own task).
  statement {
    sid       = "WatchAndStopTasksOfTheCluster"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_tasks_arn]
  }

  # AWS_REQUIRES_STAR: ecs:RegisterTaskDefinition and ecs:DescribeTaskDefinition have no
  # resource-level permissions; ec2:DescribeNetworkInterfaces neither (it finds the daemon's own
  # subnets and security groups for use_current_ecs_task_config).
  statement {
    sid = "TaskDefinitionsAndNetworkLookup"
    actions = [
      "ecs:RegisterTaskDefinition",
      "ecs:DescribeTaskDefinition",
      "ec2:DescribeNetworkInterfaces",
    ]
    resources = ["*"]
  }

  # Only the two roles of run tasks, and only to ECS tasks.
  statement {
    sid       = "PassTheRunTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.run.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  # A failed run's last log lines go into its failure message (run monitoring).
  statement {
    sid       = "ReadRunLogs"
    actions   = ["logs:GetLogEvents"]
    resources = ["${aws_cloudwatch_log_group.runs.arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "daemon" {
  name   = "run-launcher"
  role   = aws_iam_role.daemon.id
  policy = data.aws_iam_policy_document.daemon.json
}

# --- webserver -----------------------------------------------------------------------------------

resource "aws_iam_role" "webserver" {
  name_prefix        = "${var.name}-webserver-"
  description        = "Task role of the ${var.name} Dagster webserver: step logs, run termination"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "webserver" {
  statement {
    sid       = "ReadStepLogs"
    actions   = ["s3:GetObject"]
    resources = [local.compute_logs_objects]
  }

  # As for run tasks: a step whose log is not uploaded yet must read as 404, not 403.
  statement {
    sid       = "ListStepLogs"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.lake.arn]
  }

  statement {
    sid       = "DecryptStepLogs"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.s3_via_service]
    }
  }

  # Terminate a run from the UI: the launcher describes and stops its task.
  statement {
    sid       = "StopRunTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_tasks_arn]
  }
}

resource "aws_iam_role_policy" "webserver" {
  name   = "webserver"
  role   = aws_iam_role.webserver.id
  policy = data.aws_iam_policy_document.webserver.json
}

# --- code location -------------------------------------------------------------------------------

resource "aws_iam_role" "code" {
  name_prefix        = "${var.name}-code-"
  description        = "Task role of the ${var.name} code location: failed-run alerts"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "code" {
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }

  statement {
    sid       = "EncryptAlerts"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.this.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.sns_via_service]
    }
  }
}

resource "aws_iam_role_policy" "code" {
  name   = "alerts"
  role   = aws_iam_role.code.id
  policy = data.aws_iam_policy_document.code.json
}
