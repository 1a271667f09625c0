"""Schedule, change sensor and declarative automation, evaluated against real runs and a real source."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from totesys_assets.automation.automation_sensor import star_automation_sensor
from totesys_assets.automation.schedules import raw_refresh_schedule
from totesys_assets.automation.sensors import changed_days, plan_runs, source_change_sensor
from totesys_assets.partitions import daily_partitions
from totesys_assets.raw.assets import raw_asset_key, raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.source import TotesysSource
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


def test_changed_days_spans_a_quiet_weekend_and_never_the_future():
    fri = datetime(2024, 11, 15, 18, 0)
    mon = datetime(2024, 11, 18, 8, 5)
    assert changed_days(fri, mon, date(2024, 11, 18)) == [
        "2024-11-15",
        "2024-11-16",
        "2024-11-17",
        "2024-11-18",
    ]
    assert changed_days(None, mon, date(2024, 11, 18)) == ["2024-11-18"]
    assert changed_days(fri, mon, date(2024, 11, 16)) == ["2024-11-15", "2024-11-16"]


@pytest.fixture
def source(pg):
    url, sim = pg.new_source("sensor_src", seed=21, days=3)
    return url, sim


def _tick(url: str, cursor: str | None):
    ctx = dg.build_sensor_context(cursor=cursor, resources={"source": TotesysSource(url=url)})
    result = source_change_sensor(ctx)
    requests = list(result) if isinstance(result, list) else []
    return requests, ctx.cursor, result


def test_change_sensor_requests_only_changed_tables_and_advances_its_cursor(source):
    url, sim = source
    first, cursor1, _ = _tick(url, None)
    assert first, "the first tick captures the day of each table's newest version"
    state = json.loads(cursor1)
    assert set(state) == {
        "address", "counterparty", "currency", "department", "design", "payment", "payment_type",
        "purchase_order", "sales_order", "staff", "transaction",
    }  # fmt: skip

    # Nothing changed: no run, same cursor.
    again, cursor2, result = _tick(url, cursor1)
    assert again == [] and isinstance(result, dg.SkipReason) and cursor2 == cursor1

    # A new sales order (with its transaction and payment) at the source.
    at = sim.now() + timedelta(minutes=1)
    sim.insert_sales_order(at=at)
    changed, cursor3, _ = _tick(url, cursor2)
    # One run per day that can hold a version newer than the cursor (the previous newest order's
    # day up to the new one's), each for the three changed tables only.
    previous = datetime.fromisoformat(state["sales_order"]).date()
    assert [r.partition_key for r in changed] == [
        (previous + timedelta(days=i)).isoformat() for i in range((at.date() - previous).days + 1)
    ]
    for request in changed:
        assert sorted(request.asset_selection) == sorted(
            raw_asset_key(t) for t in ("payment", "sales_order", "transaction")
        )
    new_state = json.loads(cursor3)
    assert datetime.fromisoformat(new_state["sales_order"]) == at
    assert new_state["address"] == state["address"]

    # The same state again requests nothing, and a replayed tick has the same run key (no duplicates).
    assert _tick(url, cursor3)[0] == []
    replay, _, _ = _tick(url, cursor2)
    assert [r.run_key for r in replay] == [r.run_key for r in changed]


def test_plan_runs_groups_tables_by_day():
    cursor = {"sales_order": "2024-11-15T10:00:00", "payment": "2024-11-15T10:00:00"}
    maxima = {
        "sales_order": datetime(2024, 11, 15, 10, 15),
        "payment": datetime(2024, 11, 15, 10, 0),
        "design": None,
    }
    requests, new_cursor = plan_runs(cursor, maxima, date(2024, 11, 15))
    assert [(r.partition_key, r.asset_selection) for r in requests] == [
        ("2024-11-15", [raw_asset_key("sales_order")])
    ]
    assert new_cursor["sales_order"] == "2024-11-15T10:15:00" and "design" not in new_cursor


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
