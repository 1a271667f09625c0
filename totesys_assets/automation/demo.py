"""Demo activity for the embedded default: the simulated business keeps trading, at a demo pace.

Only part of the code location when TOTESYS_DB_URL is unset (never against a real source) and
TOTESYS_DEMO_RATE is not 0: every minute the simulator catches the embedded totesys database up
to the wall clock and adds TOTESYS_DEMO_RATE new orders, so a user watching `dagster dev` sees
orders arrive, payments get paid, and both land in the warehouse.
"""

import dagster as dg

from totesys_assets.resources.source import TotesysSource
from totesys_assets.settings import demo_cron, demo_rate


@dg.op(description="Advance the embedded demo source to now and add the demo pace's orders.")
def advance_demo_source(context: dg.OpExecutionContext, source: TotesysSource) -> None:
    from totesys_assets.simulator import Simulator
    from totesys_assets.simulator.demo_pace import demo_tick

    if source.url:
        raise RuntimeError("demo activity only runs against the embedded demo source, never a configured one")
    sim = Simulator(source.resolved_url())
    counts = sim.advance()  # catch up to now (UTC) at the real business's rate
    tick = demo_tick(sim, rate=demo_rate())
    context.log.info(f"demo source advanced: {tick.summary()}; simulated business: {counts}")


@dg.job(description="Advance the embedded demo source (simulator) to now, at the demo pace.")
def demo_activity_job():
    advance_demo_source()


demo_activity_schedule = dg.ScheduleDefinition(
    name="demo_activity",
    job=demo_activity_job,
    cron_schedule=demo_cron(),
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Embedded default only: the demo business trades every minute (TOTESYS_DEMO_RATE orders).",
)
