"""The declarative-automation sensor: loads missing history and carries raw changes into the star."""

import dagster as dg

from totesys_assets.settings import automation_interval_s

star_automation_sensor = dg.AutomationConditionSensorDefinition(
    "star_automation",
    target=dg.AssetSelection.groups("raw", "dimensions", "facts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    # the end-to-end daemon test and the latency benchmark shorten it (TOTESYS_AUTOMATION_INTERVAL_S)
    minimum_interval_seconds=automation_interval_s(),
    emit_backfills=True,
    description=(
        "Backfills raw and fact days never loaded (one backfill, visible in the Backfills tab) and "
        "carries raw changes into the dimensions and facts (conditions in raw/conditions.py and star/conditions.py)."
    ),
)
