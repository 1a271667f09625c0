"""The declarative-automation sensor: loads missing history and carries raw changes into the star."""

import os

import dagster as dg

# Seconds between evaluations (read at import, like TOTESYS_SENSOR_INTERVAL_S); the end-to-end
# daemon test and the latency benchmark shorten it.
AUTOMATION_INTERVAL_S = int(os.environ.get("TOTESYS_AUTOMATION_INTERVAL_S", "15"))

star_automation_sensor = dg.AutomationConditionSensorDefinition(
    "star_automation",
    target=dg.AssetSelection.groups("raw", "dimensions", "facts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    emit_backfills=True,
    description=(
        "Backfills raw and fact days never loaded (one backfill, visible in the Backfills tab) and "
        "carries raw changes into the dimensions and facts (conditions in automation/conditions.py)."
    ),
)
