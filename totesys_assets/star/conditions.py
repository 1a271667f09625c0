"""Declarative automation of the star schema: raw changes flow into the warehouse.

`eager()` is not used as is: an unpartitioned dimension depends on *every* daily raw partition,
and most days hold no rows for most tables, so eager's "no dependency missing" guard would never
let a dimension fire; and a fact must react to its own raw day, not to every dimension reload.

- History: fact day partitions before today that were never materialised are requested in the
  same tick as the raw history (raw/conditions.py) and the dimensions, so one backfill loads raw,
  then the dimensions, then the facts.
- Trigger: a raw dependency's data version changed (the raw assets version their data by the set
  of row versions, so a refresh that finds nothing new triggers nothing).
- Heartbeat: on TOTESYS_HEARTBEAT_CRON (every 20 minutes) the dimensions and today's fact
  partition reload anyway (a no-op upsert when nothing changed), so the 30-minute freshness policy
  means the warehouse was reconciled with the lake less than 30 minutes ago, nights and weekends too.
- Order: facts wait while a dimension they reference is about to be requested or running,
  because the warehouse enforces the foreign keys from facts to dimensions.
"""

from datetime import timedelta

import dagster as dg

from totesys_assets.raw.conditions import history_day_never_loaded, never_loaded, not_running
from totesys_assets.settings import heartbeat_cron

RAW = dg.AssetSelection.groups("raw")
DIMENSIONS = dg.AssetSelection.groups("dimensions")

freshness_policy = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=20)
)

_raw_changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).allow(RAW)
_heartbeat = dg.AutomationCondition.cron_tick_passed(heartbeat_cron(), cron_timezone="UTC")
# (type: ignore: Dagster 1.13's generic self-types reject an asset-keyed condition's since_last_handled)
_dimension_trigger = (_raw_changed | _heartbeat).since_last_handled() | never_loaded  # type: ignore[misc]

dimension_condition = (
    _dimension_trigger & ~dg.AutomationCondition.any_deps_in_progress() & not_running
).with_label("raw_changed_or_heartbeat_or_never_loaded")

# `will_be_requested()` only sees parents that can run in the *same* run, which an unpartitioned
# dimension and a daily fact cannot; so a changed fact day instead waits while any dimension it
# references still has an unhandled trigger (it is about to be requested) or is running.
_dimension_pending = dg.AutomationCondition.any_deps_match(_dimension_trigger).allow(DIMENSIONS)
_deps_idle = ~dg.AutomationCondition.any_deps_in_progress() & not_running

# History days need no such wait: requested in the same tick as the dimensions they are part of
# the same backfill, which loads a fact only after its dimensions.
fact_condition = (
    (history_day_never_loaded & _deps_idle)
    | (
        (_raw_changed | (dg.AutomationCondition.in_latest_time_window() & _heartbeat)).since_last_handled()  # type: ignore[misc]
        & ~_dimension_pending
        & _deps_idle
    )
).with_label("history_or_raw_day_changed_after_dimensions")
