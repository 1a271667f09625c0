"""Declarative automation of the raw assets: the history loads by itself.

Raw day partitions before today that were never materialised (a first start, or days lost to an
outage) are requested by the automation sensor; a tick that requests many partitions emits one
backfill (single run per asset, `BackfillPolicy.single_run()`) that loads raw, then the dimensions,
then the facts (star/conditions.py). Today's raw partition belongs to the schedule and the change
sensor. A failed history partition is not retried by automation (no retry storm); relaunch it from
the Backfills tab.
"""

import dagster as dg

not_running = ~dg.AutomationCondition.in_progress()
# Never materialised and not failed last time: stays true until loaded, so it is not wrapped in
# since_last_handled (in_progress keeps it from being requested twice).
never_loaded = (dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()).with_label(
    "never_loaded"
)
history_day_never_loaded = (never_loaded & ~dg.AutomationCondition.in_latest_time_window()).with_label(
    "history_day_never_loaded"
)

raw_history_condition = (history_day_never_loaded & not_running).with_label("backfill_missing_history")

# The change detector (raw/detector.py) observed the day's source fingerprint with a new version:
# the day holds something the lake has not captured. Handled once requested, so a day whose run
# fails is not retried by automation until its source changes again.
source_day_changed = (
    dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
    .since_last_handled()
    .with_label("source_day_changed")
)

raw_condition = (raw_history_condition | (source_day_changed & not_running)).with_label(
    "history_or_source_day_changed"
)
