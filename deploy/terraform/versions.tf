# Terraform >= 1.6 or OpenTofu >= 1.6, AWS provider 5.x. Nothing here needs a newer feature: no
# write-only attributes (Terraform 1.11), so secret values are never passed through Terraform at all
# (see secrets.tf).
terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }

  # Keep the state remote and encrypted, e.g. (fill in and uncomment, then `terraform init`):
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "totesys/dagster.tfstate"
  #   region       = "eu-west-2"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Project = var.name, ManagedBy = "terraform" }, var.tags)
  }
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}
