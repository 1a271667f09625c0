"""The code location: `dagster dev` (via [tool.dagster] / workspace.yaml) loads `defs`."""

import dagster as dg

from totesys_assets.automation.alerts import run_failure_alerts
from totesys_assets.automation.automation_sensor import star_automation_sensor
from totesys_assets.automation.change_sensor import source_fingerprint_sensor
from totesys_assets.automation.demo import demo_activity_job, demo_activity_schedule
from totesys_assets.automation.jobs import raw_refresh_job
from totesys_assets.automation.schedules import raw_refresh_schedule
from totesys_assets.raw.assets import raw_assets
from totesys_assets.raw.detector import check_source_history_job, source_assets
from totesys_assets.resources.config import build_resources, uses_embedded_source
from totesys_assets.settings import demo_rate
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks

_demo = uses_embedded_source() and demo_rate() > 0

# Steps run in the run's own process (a fresh Python process per step costs seconds of imports
# each; our steps are short and I/O-bound on the same databases). Each run is still its own process.
EXECUTOR = dg.in_process_executor

defs = dg.Definitions(
    assets=[*source_assets, *raw_assets, *star_assets],
    asset_checks=star_checks,
    jobs=[raw_refresh_job, check_source_history_job, *([demo_activity_job] if _demo else [])],
    schedules=[raw_refresh_schedule, *([demo_activity_schedule] if _demo else [])],
    sensors=[source_fingerprint_sensor, star_automation_sensor, run_failure_alerts],
    resources=build_resources(),
    executor=EXECUTOR,
)
