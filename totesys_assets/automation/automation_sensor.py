"""The declarative-automation sensor that evaluates the star assets' conditions."""

import os

import dagster as dg

# Seconds between evaluations (read at import, like TOTESYS_SENSOR_INTERVAL_S); the end-to-end
# daemon test and the latency benchmark shorten it.
AUTOMATION_INTERVAL_S = int(os.environ.get("TOTESYS_AUTOMATION_INTERVAL_S", "30"))

star_automation_sensor = dg.AutomationConditionSensorDefinition(
    "star_automation",
    target=dg.AssetSelection.groups("dimensions", "facts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Carries raw changes into the dimensions and facts (conditions in automation/conditions.py).",
)
