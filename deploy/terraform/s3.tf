# The lake bucket: the lake under var.lake_prefix (TOTESYS_LAKE_URL) and Dagster's step logs under
# var.compute_log_prefix (DAGSTER_COMPUTE_LOG_BUCKET / DAGSTER_COMPUTE_LOG_PREFIX).

resource "aws_s3_bucket" "lake" {
  #checkov:skip=CKV_AWS_18:Server access logs need a second bucket with its own retention; audit reads and writes with CloudTrail S3 data events on this bucket instead (README.md).
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage for data that can be re-extracted from the source; versioning covers accidental overwrites.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events: Dagster's sensors read the source database, not the bucket.
  bucket        = local.lake_bucket_name
  force_destroy = var.force_destroy_bucket
}

resource "aws_s3_bucket_ownership_controls" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "lake" {
  bucket                  = aws_s3_bucket.lake.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "lake" {
  bucket = aws_s3_bucket.lake.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.this.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "lake" {
  bucket = aws_s3_bucket.lake.id

  # Old step logs: the UI shows "logs not found" for runs older than this.
  rule {
    id     = "expire-compute-logs"
    status = "Enabled"

    filter {
      prefix = "${var.compute_log_prefix}/"
    }

    expiration {
      days = var.compute_log_retention_days
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Whole bucket: overwritten lake objects and unfinished uploads do not pile up.
  rule {
    id     = "tidy-versions-and-uploads"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.lake]
}

# TLS only: any request over plain HTTP is denied, whoever makes it.
data "aws_iam_policy_document" "lake_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.lake.arn,
      "${aws_s3_bucket.lake.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "lake" {
  bucket = aws_s3_bucket.lake.id
  policy = data.aws_iam_policy_document.lake_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.lake]
}
