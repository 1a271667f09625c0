"""Declarative automation: how raw changes flow into the dimensions and facts by themselves.

`eager()` is not used as is: an unpartitioned dimension depends on *every* daily raw partition,
and most days hold no rows for most tables, so eager's "no dependency missing" guard would never
let a dimension fire; and a fact must react to its own raw day, not to every dimension reload.

- Trigger: a raw dependency's data version changed (the raw assets version their data by the set
  of row versions, so a refresh that finds nothing new triggers nothing).
- Heartbeat: every 20 minutes the dimensions and today's fact partition reload anyway (a no-op
  upsert when nothing changed). This makes the 30-minute freshness policy mean what we promise:
  the warehouse was reconciled with the lake less than 30 minutes ago, nights and weekends too.
- Order: facts wait while a dimension they reference is about to be requested or running,
  because the warehouse enforces the foreign keys from facts to dimensions.
"""

import os
from datetime import timedelta

import dagster as dg

RAW = dg.AssetSelection.groups("raw")
DIMENSIONS = dg.AssetSelection.groups("dimensions")
HEARTBEAT_CRON = os.environ.get("TOTESYS_HEARTBEAT_CRON", "*/20 * * * *")

freshness_policy = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=30), warn_window=timedelta(minutes=20)
)

_raw_changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).allow(RAW)
_heartbeat = dg.AutomationCondition.cron_tick_passed(HEARTBEAT_CRON, cron_timezone="UTC")
_dimension_trigger = (_raw_changed | _heartbeat).since_last_handled()

dimension_condition = (
    _dimension_trigger
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("raw_changed_or_heartbeat")

# `will_be_requested()` only sees parents that can run in the *same* run, which an unpartitioned
# dimension and a daily fact cannot; so a fact instead waits while any dimension it references
# still has an unhandled trigger (it is about to be requested) or is running.
_dimension_pending = dg.AutomationCondition.any_deps_match(_dimension_trigger).allow(DIMENSIONS)

fact_condition = (
    (_raw_changed | (dg.AutomationCondition.in_latest_time_window() & _heartbeat)).since_last_handled()
    & ~_dimension_pending
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("raw_day_changed_after_dimensions")
