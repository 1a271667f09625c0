# Inputs of the deployment. Required: region, vpc_id, private_subnet_ids, webserver_allowed_cidrs,
# image_tag (and storage_host when create_rds = false). See README.md and terraform.tfvars.example.

# --- where ---------------------------------------------------------------------------------------

variable "region" {
  description = "AWS region of the whole stack, e.g. eu-west-2."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name (ECS cluster, secrets, log groups, topic, roles)."
  type        = string
  default     = "totesys"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name))
    error_message = "name: 2-21 characters, lower-case letters, digits and '-', starting with a letter."
  }
}

variable "tags" {
  description = "Extra tags for every resource (added to Project and ManagedBy)."
  type        = map(string)
  default     = {}
}

# --- network -------------------------------------------------------------------------------------

variable "vpc_id" {
  description = "VPC of the ECS tasks (and of the RDS instance and load balancer, when created)."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets of the ECS tasks (webserver, daemon, code location and every run task). They need a route to the AWS APIs (NAT gateway or VPC endpoints for ECR, S3, Logs, Secrets Manager, SNS, ECS)."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) > 0
    error_message = "private_subnet_ids: at least one subnet."
  }
}

variable "assign_public_ip" {
  description = "Give the tasks public IPs (only for subnets routed to an internet gateway and no NAT). Their security groups still admit only the traffic described in network.tf."
  type        = bool
  default     = false
}

variable "webserver_allowed_cidrs" {
  description = "The only CIDR blocks that reach the Dagster UI (port 3000 on the task, or 443 on the load balancer). The UI has no login of its own: keep this to your office/VPN ranges."
  type        = list(string)

  validation {
    condition     = length(var.webserver_allowed_cidrs) > 0 && alltrue([for c in var.webserver_allowed_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "webserver_allowed_cidrs: one or more valid CIDR blocks, none of them the whole internet (/0): the UI has no login."
  }
}

variable "webserver_certificate_arn" {
  description = "ACM certificate ARN. When set, an HTTPS application load balancer (in public_subnet_ids, or internal) fronts the webserver; when null the webserver task is reached directly on port 3000 (VPN, peering, bastion)."
  type        = string
  default     = null
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancer (used only with webserver_certificate_arn). Empty: the load balancer is internal, in private_subnet_ids."
  type        = list(string)
  default     = []
}

variable "webserver_url" {
  description = "Base URL of the UI as users reach it (DAGSTER_WEBSERVER_URL: the run link in alerts), e.g. https://dagster.example.com. Null: alerts carry no link."
  type        = string
  default     = null
}

variable "database_cidr_blocks" {
  description = "Where the tasks may open database connections (totesys source, warehouse, Dagster storage). Null: the VPC's own CIDR."
  type        = list(string)
  default     = null
}

variable "database_ports" {
  description = "TCP ports of those databases."
  type        = list(number)
  default     = [5432]
}

# --- image ---------------------------------------------------------------------------------------

variable "image_tag" {
  description = "Tag of the deploy/Dockerfile image pushed to the ECR repository this module creates (tags are immutable: use a version, e.g. 0.1.0 or a git SHA)."
  type        = string
}

# --- data lake and compute logs ------------------------------------------------------------------

variable "lake_bucket_name" {
  description = "Name of the lake bucket. Null: <name>-lake-<account id>."
  type        = string
  default     = null
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket (TOTESYS_LAKE_URL = s3://<bucket>/<lake_prefix>)."
  type        = string
  default     = "lake"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.lake_prefix))
    error_message = "lake_prefix: a key prefix without leading or trailing '/'."
  }
}

variable "compute_log_prefix" {
  description = "Key prefix of Dagster's step logs in the same bucket (DAGSTER_COMPUTE_LOG_PREFIX); must not overlap lake_prefix."
  type        = string
  default     = "dagster/compute-logs"

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.compute_log_prefix))
    error_message = "compute_log_prefix: a key prefix without leading or trailing '/'."
  }
}

variable "compute_log_retention_days" {
  description = "Step logs older than this are deleted by the bucket's lifecycle rule."
  type        = number
  default     = 90
}

variable "noncurrent_version_retention_days" {
  description = "Overwritten or deleted object versions (the bucket is versioned) are kept this long."
  type        = number
  default     = 30
}

variable "force_destroy_bucket" {
  description = "Let `terraform destroy` delete a non-empty lake bucket (every object and version). Keep false outside throw-away stacks."
  type        = bool
  default     = false
}

variable "start_date" {
  description = "TOTESYS_START_DATE: first day of history, YYYY-MM-DD (the default is the project's own, totesys_assets/settings.py)."
  type        = string
  default     = "2022-11-03"

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}$", var.start_date))
    error_message = "start_date: YYYY-MM-DD."
  }
}

# --- Dagster storage (PostgreSQL) ----------------------------------------------------------------

variable "create_rds" {
  description = "Create an RDS PostgreSQL instance for Dagster's storage. False: bring your own (storage_host etc.) and put its password into the <name>/dagster-storage-password secret."
  type        = bool
  default     = true
}

variable "storage_host" {
  description = "Host of your own Dagster storage database (create_rds = false)."
  type        = string
  default     = null
}

variable "storage_port" {
  description = "Port of the Dagster storage database."
  type        = number
  default     = 5432
}

variable "storage_db" {
  description = "Database name of the Dagster storage."
  type        = string
  default     = "dagster"
}

variable "storage_username" {
  description = "User of the Dagster storage database (the RDS master user when create_rds = true)."
  type        = string
  default     = "dagster"
}

variable "rds_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.small"
}

variable "rds_engine_version" {
  description = "PostgreSQL major version of the RDS instance."
  type        = string
  default     = "16"
}

variable "rds_allocated_storage" {
  description = "Initial storage of the RDS instance, GiB."
  type        = number
  default     = 20
}

variable "rds_max_allocated_storage" {
  description = "Storage autoscaling ceiling, GiB."
  type        = number
  default     = 100
}

variable "rds_multi_az" {
  description = "Multi-AZ standby for the RDS instance (doubles its cost)."
  type        = bool
  default     = false
}

variable "rds_backup_retention_days" {
  description = "Automated backup retention of the RDS instance, days."
  type        = number
  default     = 7
}

variable "deletion_protection" {
  description = "Deletion protection of the RDS instance and the load balancer (apply false before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "rds_performance_insights" {
  description = "Performance Insights (CloudWatch Database Insights, standard mode) on the RDS instance; set false for an instance class that lacks it."
  type        = bool
  default     = true
}

variable "db_subnet_ids" {
  description = "Subnets of the RDS instance (two AZs at least). Null: private_subnet_ids."
  type        = list(string)
  default     = null
}

# --- alerts --------------------------------------------------------------------------------------

variable "alert_email" {
  description = "E-mail address subscribed to the alert topic (AWS sends a confirmation mail first). Null: no subscription."
  type        = string
  default     = null
}

variable "create_alert_webhook_secret" {
  description = "Create a <name>/alert-webhook secret and inject it as TOTESYS_ALERT_WEBHOOK_URL into the code location."
  type        = bool
  default     = false
}

# --- sizes and retention -------------------------------------------------------------------------

variable "webserver_cpu" {
  description = "Fargate CPU units of the webserver task."
  type        = number
  default     = 512
}

variable "webserver_memory" {
  description = "Memory of the webserver task, MiB."
  type        = number
  default     = 1024
}

variable "daemon_cpu" {
  description = "Fargate CPU units of the daemon task."
  type        = number
  default     = 512
}

variable "daemon_memory" {
  description = "Memory of the daemon task, MiB."
  type        = number
  default     = 1024
}

variable "code_cpu" {
  description = "Fargate CPU units of the code-location task."
  type        = number
  default     = 1024
}

variable "code_memory" {
  description = "Memory of the code-location task, MiB."
  type        = number
  default     = 2048
}

variable "webserver_count" {
  description = "Number of webserver tasks (stateless; the daemon is always exactly one)."
  type        = number
  default     = 1
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups, days."
  type        = number
  default     = 365
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the stack's KMS key is deleted after `terraform destroy`."
  type        = number
  default     = 30
}
