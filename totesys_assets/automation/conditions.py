"""Declarative automation: how the history gets loaded and raw changes flow into the warehouse.

`eager()` is not used as is: an unpartitioned dimension depends on *every* daily raw partition,
and most days hold no rows for most tables, so eager's "no dependency missing" guard would never
let a dimension fire; and a fact must react to its own raw day, not to every dimension reload.

- History: raw and fact day partitions before today that were never materialised (a first start,
  or days lost to an outage) are requested by the automation sensor; a tick that requests many
  partitions emits one backfill (single run per asset, `BackfillPolicy.single_run()`) that loads
  raw, then the dimensions, then the facts. Today's raw partition belongs to the
  schedule and the change sensor. A failed history partition is not retried by automation (no
  retry storm); relaunch it from the Backfills tab.
- Trigger: a raw dependency's data version changed (the raw assets version their data by the set
  of row versions, so a refresh that finds nothing new triggers nothing).
- Heartbeat: every 20 minutes the dimensions and today's fact partition reload anyway (a no-op
  upsert when nothing changed), so the 30-minute freshness policy means the warehouse was
  reconciled with the lake less than 30 minutes ago, nights and weekends too.
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

_not_running = ~dg.AutomationCondition.in_progress()
# Never materialised and not failed last time: stays true until loaded, so it is not wrapped in
# since_last_handled (in_progress keeps it from being requested twice).
_never_loaded = (dg.AutomationCondition.missing() & ~dg.AutomationCondition.execution_failed()).with_label(
    "never_loaded"
)
_history_missing = (_never_loaded & ~dg.AutomationCondition.in_latest_time_window()).with_label(
    "history_day_never_loaded"
)

raw_history_condition = (_history_missing & _not_running).with_label("backfill_missing_history")

_raw_changed = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed()).allow(RAW)
_heartbeat = dg.AutomationCondition.cron_tick_passed(HEARTBEAT_CRON, cron_timezone="UTC")
_dimension_trigger = (_raw_changed | _heartbeat).since_last_handled() | _never_loaded

dimension_condition = (
    _dimension_trigger & ~dg.AutomationCondition.any_deps_in_progress() & _not_running
).with_label("raw_changed_or_heartbeat_or_never_loaded")

# `will_be_requested()` only sees parents that can run in the *same* run, which an unpartitioned
# dimension and a daily fact cannot; so a changed fact day instead waits while any dimension it
# references still has an unhandled trigger (it is about to be requested) or is running.
_dimension_pending = dg.AutomationCondition.any_deps_match(_dimension_trigger).allow(DIMENSIONS)
_deps_idle = ~dg.AutomationCondition.any_deps_in_progress() & _not_running

# History days need no such wait: requested in the same tick as the dimensions they are part of
# the same backfill, which loads a fact only after its dimensions.
fact_condition = (
    (_history_missing & _deps_idle)
    | (
        (_raw_changed | (dg.AutomationCondition.in_latest_time_window() & _heartbeat)).since_last_handled()
        & ~_dimension_pending
        & _deps_idle
    )
).with_label("history_or_raw_day_changed_after_dimensions")
