"""Schedule, change sensor and declarative automation, evaluated against real runs and a real source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from totesys_assets.automation.automation_sensor import star_automation_sensor
from totesys_assets.automation.schedules import raw_refresh_schedule
from totesys_assets.partitions import daily_partitions
from totesys_assets.raw.assets import raw_asset_key, raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks

ALL = [*raw_assets, *star_assets, *star_checks]


def _schedule_partitions(when: datetime) -> list[str]:
    ctx = dg.build_schedule_context(scheduled_execution_time=when)
    requests = list(raw_refresh_schedule(ctx))
    assert all(r.asset_selection is None for r in requests)  # the whole raw job: all 11 tables
    assert len({r.run_key for r in requests}) == len(requests)
    return [r.partition_key for r in requests]


def test_schedule_refreshes_today_and_finalises_yesterday_after_midnight():
    assert _schedule_partitions(datetime(2024, 11, 14, 10, 0, tzinfo=UTC)) == ["2024-11-14"]
    assert _schedule_partitions(datetime(2024, 11, 15, 0, 10, tzinfo=UTC)) == ["2024-11-14", "2024-11-15"]
    assert _schedule_partitions(datetime(2024, 11, 15, 0, 40, tzinfo=UTC)) == ["2024-11-15"]
    assert raw_refresh_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert raw_refresh_schedule.job.name == "raw_refresh"


def test_automation_loads_the_history_then_carries_a_raw_change_to_the_dimensions_then_the_fact(
    pg, tmp_path, monkeypatch
):
    url, sim = pg.new_source("auto_src", seed=4, start=datetime(2024, 1, 1, 9), end=datetime(2024, 1, 5, 17))
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("WAREHOUSE_DB_URL", pg.new_db("auto_wh"))
    resources = build_resources()
    defs = dg.Definitions(assets=ALL, resources=resources)
    everything = dg.AssetSelection.all()
    instance = dg.DagsterInstance.ephemeral()
    when = datetime(2024, 1, 5, 17, 5, tzinfo=UTC)
    start = daily_partitions.get_first_partition_key()
    history = daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, "2024-01-04"))

    # First start, nothing loaded: every raw and fact day before today and every dimension are
    # requested in one tick, which the automation sensor emits as one backfill (it loads raw, then
    # the dimensions, then the facts); today is the schedule's and the change sensor's.
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=everything, evaluation_time=when
    )
    requested = _requested(first, [*raw_assets, *star_assets])
    days_requested = {k: v for k, v in requested.items() if v != [None]}
    tables = [k.to_user_string() for k in raw_assets[0].keys]
    facts = ["fact_payment", "fact_purchase_order", "fact_sales_order"]
    assert days_requested == dict.fromkeys([*tables, *facts], history)
    dims = {k for k, v in requested.items() if v == [None]}
    assert dims == {a.key.to_user_string() for a in star_assets[:-1]}
    assert star_automation_sensor.emit_backfills

    # The backfill: the raw range and the facts range as one run each (single_run), the dimensions
    # between them. The next evaluation requests nothing: the history is in place.
    from totesys_assets_tests.helpers import materialize_range

    for group in ("raw", "dimensions", "facts"):
        selection = dg.AssetSelection.groups(group)
        if group == "dimensions":
            assert dg.materialize(ALL, resources=resources, selection=selection, instance=instance).success
        else:
            assert materialize_range(
                ALL, resources, start, "2024-01-05", selection=selection, instance=instance
            ).success
    star = dg.AssetSelection.groups("dimensions", "facts")
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=everything, cursor=first.cursor,
        evaluation_time=when + timedelta(seconds=30),
    )  # fmt: skip
    assert _requested(first, [*raw_assets, *star_assets]) == {}
    when += timedelta(seconds=30)

    # A new order at the source; the change sensor's run extracts that day's changed tables.
    sim.insert_sales_order(at=datetime(2024, 1, 5, 17, 10))
    raw_sel = dg.AssetSelection.assets(*(raw_asset_key(t) for t in ("sales_order", "transaction", "payment")))
    assert dg.materialize(
        ALL, resources=resources, selection=raw_sel, partition_key="2024-01-05", instance=instance
    ).success

    second = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=star,
        cursor=first.cursor,
        evaluation_time=when + timedelta(seconds=30),
    )
    dims = {"dim_date", "dim_transaction"}
    assert _requested(second) == {d: [None] for d in dims}

    # The dimensions load; the next evaluation requests the fact partition of the changed day only.
    dim_sel = dg.AssetSelection.assets(*dims)
    assert dg.materialize(ALL, resources=resources, selection=dim_sel, instance=instance).success
    third = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=star,
        cursor=second.cursor,
        evaluation_time=when + timedelta(seconds=60),
    )
    assert _requested(third) == {
        "fact_sales_order": ["2024-01-05"], "fact_payment": ["2024-01-05"],
    }  # fmt: skip
    # Nothing changed since: the fourth evaluation requests nothing.
    assert dg.materialize(
        ALL,
        resources=resources,
        selection=dg.AssetSelection.groups("facts"),
        partition_key="2024-01-05",
        instance=instance,
    ).success
    fourth = dg.evaluate_automation_conditions(
        defs=defs,
        instance=instance,
        asset_selection=star,
        cursor=third.cursor,
        evaluation_time=when + timedelta(seconds=90),
    )
    assert _requested(fourth) == {}


def _requested(result, assets=star_assets) -> dict[str, list]:
    """Asset -> requested partitions (None for an unpartitioned asset), for every requested asset."""
    out = {}
    for key in [k for a in assets for k in a.keys]:
        parts = result.get_requested_partitions(key)
        if parts:
            out[key.to_user_string()] = sorted(parts, key=str)
    return out
