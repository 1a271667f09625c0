"""The declarative-automation sensor that evaluates the star assets' conditions."""

import dagster as dg

star_automation_sensor = dg.AutomationConditionSensorDefinition(
    "star_automation",
    target=dg.AssetSelection.groups("dimensions", "facts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Carries raw changes into the dimensions and facts (conditions in automation/conditions.py).",
)
