"""The schedule that keeps the raw layer current even with the change sensor off."""

from datetime import datetime, timedelta

import dagster as dg

from totesys_assets.automation.jobs import raw_refresh_job
from totesys_assets.settings import refresh_cron

# By default every 10 minutes (settings.refresh_cron): a source change reaches the lake within 10
# minutes and the warehouse well inside the 30-minute promise. Ticks before 00:30 UTC also finalise
# the previous day, so rows stamped just before midnight are captured even if they were committed
# just after it.
FINALISE_UNTIL = timedelta(minutes=30)


def partitions_for_tick(tick: datetime) -> list[str]:
    today = tick.date()
    days = [today.isoformat()]
    if tick - datetime.combine(today, datetime.min.time(), tzinfo=tick.tzinfo) < FINALISE_UNTIL:
        days.insert(0, (today - timedelta(days=1)).isoformat())
    return days


@dg.schedule(
    cron_schedule=refresh_cron(),
    job=raw_refresh_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh today's raw partitions (all 11 tables); finalise yesterday after midnight.",
)
def raw_refresh_schedule(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time
    for day in partitions_for_tick(tick):
        yield dg.RunRequest(
            run_key=f"{day}@{tick.isoformat()}",
            partition_key=day,
            tags={"totesys/trigger": "schedule"},
        )
