# The alert topic: the run_failure_alerts sensor publishes to it (TOTESYS_ALERT_SNS_TOPIC_ARN on the
# code location), and so do the CloudWatch alarms on the daemon and the code location.

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = aws_kms_key.this.arn
}

resource "aws_sns_topic_subscription" "alert_email" {
  count     = var.alert_email == null ? 0 : 1
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

# The daemon is the one process that runs sensors, schedules and the run queue; the code location
# serves every job. Either one missing for three minutes raises an alert (Container Insights).
resource "aws_cloudwatch_metric_alarm" "service_down" {
  for_each = {
    daemon = local.daemon_service_name
    code   = local.code_service_name
  }

  alarm_name          = "${var.name}-${each.value}-not-running"
  alarm_description   = "ECS service ${each.value} of cluster ${local.cluster_name} has had no running task for 3 minutes."
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
  ok_actions          = [aws_sns_topic.alerts.arn]

  dimensions = {
    ClusterName = local.cluster_name
    ServiceName = each.value
  }
}
