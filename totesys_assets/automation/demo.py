"""Demo activity for the embedded default: the simulated business keeps trading.

Only part of the code location when TOTESYS_DB_URL is unset (never against a real source): every
few minutes the simulator advances the embedded totesys database to the wall clock, so a new user
watching `dagster dev` sees orders arrive, flow through the lake and land in the warehouse.
"""

import os

import dagster as dg

from totesys_assets.resources.source import TotesysSource

DEMO_CRON = os.environ.get("TOTESYS_DEMO_CRON", "*/5 * * * *")


@dg.op(description="Advance the embedded demo source to now (new orders, paid flips, changes).")
def advance_demo_source(context: dg.OpExecutionContext, source: TotesysSource) -> None:
    from totesys_assets.simulator import Simulator

    if source.url:
        raise RuntimeError("demo activity only runs against the embedded demo source, never a configured one")
    counts = Simulator(source.resolved_url()).advance()  # catch up to now (UTC)
    context.log.info(f"demo source advanced: {counts}")


@dg.job(description="Advance the embedded demo source (simulator) to the current time.")
def demo_activity_job():
    advance_demo_source()


demo_activity_schedule = dg.ScheduleDefinition(
    name="demo_activity",
    job=demo_activity_job,
    cron_schedule=DEMO_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Embedded default only: the demo business keeps trading every few minutes.",
)
