"""How the lake captures changes: versions by content, tombstones, and the per-day fingerprints
(docs/decisions.md, "Change capture by content and per-day fingerprints")."""

from __future__ import annotations

import json
from datetime import datetime

import dagster as dg
import polars as pl
from dagster_aws.s3 import S3Resource

from totesys_assets.resources.lake import (
    CAPTURED_AT,
    DELETED,
    ROW_HASH,
    LakeResource,
    latest_captured,
    merge_day,
    split_by_day,
)
from totesys_assets.specs import SOURCE_TABLES

SPEC = SOURCE_TABLES["currency"]
T1, T2 = datetime(2024, 1, 2, 9), datetime(2024, 1, 2, 10)
C1, C2, C3 = datetime(2024, 1, 3), datetime(2024, 1, 4), datetime(2024, 1, 5)


def _rows(*rows: tuple[int, str, datetime]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"currency_id": i, "currency_code": code, "created_at": datetime(2024, 1, 1), "last_updated": lu}
            for i, code, lu in rows
        ],
        schema=SPEC.polars_schema,
    )


def test_an_in_place_change_is_a_new_version_and_an_unchanged_extract_writes_nothing():
    first, added = merge_day(SPEC, None, _rows((1, "GBP", T1), (2, "USD", T1)), [], C1)
    assert added == 2 and first is not None
    assert first[CAPTURED_AT].to_list() == [C1, C1] and not first[DELETED].any()

    # the same rows again: nothing to write (an unchanged day is not rewritten)
    assert merge_day(SPEC, first, _rows((1, "GBP", T1), (2, "USD", T1)), [], C2) == (None, 0)

    # 2 changes in place (same last_updated): a new version, captured later; nothing is dropped
    second, added = merge_day(SPEC, first, _rows((1, "GBP", T1), (2, "USX", T1)), [], C2)
    assert added == 1 and second is not None
    assert second.select("currency_id", "currency_code", CAPTURED_AT).rows() == [
        (1, "GBP", C1),
        (2, "USD", C1),
        (2, "USX", C2),
    ]
    assert latest_captured(SPEC, second).filter(pl.col("currency_id") == 2)["currency_code"].item() == "USX"
    # a revert to the first content is the latest state again, so it is captured once more
    third, added = merge_day(SPEC, second, _rows((1, "GBP", T1), (2, "USD", T1)), [], C3)
    assert added == 1 and third is not None
    assert latest_captured(SPEC, third).filter(pl.col("currency_id") == 2)["currency_code"].item() == "USD"


def test_a_row_gone_from_the_source_gets_a_tombstone_once_and_keeps_its_versions():
    day, _ = merge_day(SPEC, None, _rows((1, "GBP", T1), (2, "USD", T2)), [], C1)
    deleted, added = merge_day(SPEC, day, _rows((1, "GBP", T1)), [2], C2)
    assert added == 1 and deleted is not None
    assert deleted.filter(pl.col("currency_id") == 2).select(
        "currency_code", DELETED, CAPTURED_AT
    ).rows() == [
        ("USD", False, C1),
        ("USD", True, C2),
    ]
    # observed gone again: no second tombstone
    assert merge_day(SPEC, deleted, _rows((1, "GBP", T1)), [2], C3) == (None, 0)
    # a key that left the day but is still in the source (moved to another day) is not deleted
    assert merge_day(SPEC, day, _rows((1, "GBP", T1)), [], C2) == (None, 0)


def test_rows_outside_the_partitions_fall_into_the_first_and_the_current_partition():
    frame = _rows(
        (1, "GBP", datetime(2019, 5, 1)), (2, "USD", datetime(2024, 1, 2)), (3, "EUR", datetime(2031, 1, 1))
    )
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    parts = split_by_day(frame, days, open_start=True, open_end=True)
    assert {d: p["currency_id"].to_list() for d, p in parts.items()} == {
        "2024-01-01": [1],
        "2024-01-02": [2],
        "2024-01-03": [3],
    }


def test_objects_without_capture_metadata_read_as_legacy_versions(tmp_path):
    from totesys_assets.resources.lake import LEGACY_CAPTURED_AT, frame_to_parquet

    lake = LakeResource(url=str(tmp_path), s3=S3Resource())
    lake.put(lake.raw_key("currency", "2024-01-02"), frame_to_parquet(_rows((1, "GBP", T1))))
    frame = lake.read_raw("currency")
    assert frame.select(ROW_HASH, CAPTURED_AT, DELETED).rows() == [(0, LEGACY_CAPTURED_AT, False)]
    assert lake.read_raw("currency", columns=["currency_id", DELETED]).rows() == [(1, False)]


# --- the detector, against a real source, a real S3 API and real Dagster runs ---------------------


def _change_the_oldest_order(conn) -> str:
    """An in-place change that leaves last_updated alone; returns the order's day."""
    return conn.execute(
        "UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = "
        "(SELECT min(sales_order_id) FROM sales_order) RETURNING last_updated::date::text"
    ).fetchone()[0]


class Ticks:
    """The change sensor's ticks on one instance, carrying its cursor; as far apart as the daemon's
    (no pacing) unless `paced`."""

    def __init__(self, instance: dg.DagsterInstance, resources: dict):
        self.instance, self.resources, self.cursor = instance, resources, None

    def __call__(self, *, paced: bool = False):
        from totesys_assets.automation.change_sensor import source_fingerprint_sensor
        from totesys_assets_tests.automation_driver import unpaced

        if not paced:
            self.cursor = unpaced(self.cursor)
        with dg.build_sensor_context(
            instance=self.instance, resources=self.resources, cursor=self.cursor
        ) as ctx:
            result = source_fingerprint_sensor(ctx)
            self.cursor = ctx.cursor
        return result


def _requested(result, keys) -> dict[str, set[str]]:
    return {k.path[-1]: set(result.get_requested_partitions(k)) - {None} for k in keys}


def test_the_detector_finds_exactly_the_changed_days_and_automation_requests_only_them(pg, s3, monkeypatch):
    """Before the dimensions were first loaded the sensor reports exactly the changed days as
    observations (as `check_source_history` does), and automation requests only them."""
    import psycopg

    from totesys_assets.partitions import daily_partitions
    from totesys_assets.raw.assets import raw_asset_key, raw_assets
    from totesys_assets.raw.detector import detect_changes, observations, source_assets
    from totesys_assets.resources.config import build_resources
    from totesys_assets.resources.source import TotesysSource
    from totesys_assets_tests.helpers import materialize_range

    url, _ = pg.new_source("detect", seed=5, days=3)
    bucket = s3.new_bucket("detect")
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/t")
    with psycopg.connect(url, autocommit=True) as conn:
        first = conn.execute("SELECT min(last_updated)::date::text FROM staff").fetchone()[0]
    last = daily_partitions.get_last_partition_key()
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_range(raw_assets, build_resources(), first, last, instance=instance).success
    lake = LakeResource(url=f"s3://{bucket}/t", s3=S3Resource())
    resources = {"source": TotesysSource(url=url), "lake": lake}

    tick = Ticks(instance, resources)
    assert isinstance(tick(), dg.SkipReason)  # an unchanged source: nothing differs

    with psycopg.connect(url, autocommit=True) as conn:
        # an in-place change that leaves last_updated alone, and a deletion
        order_day = _change_the_oldest_order(conn)
        payment_day = conn.execute(
            "DELETE FROM payment WHERE payment_id = (SELECT max(payment_id) FROM payment) "
            "RETURNING least(last_updated::date, %s::date)::text",
            (last,),
        ).fetchone()[0]

    keys = [raw_asset_key(t) for t in SOURCE_TABLES]
    defs = dg.Definitions(assets=[*source_assets, *raw_assets], resources=build_resources())
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    # No dimension was ever loaded (a first start): the days go to automation, which orders the
    # history, as observations of the source assets.
    result = tick()
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    events = result.asset_events
    observed = {(e.asset_key.path[-1], e.partition) for e in events}
    assert observed == {("sales_order", order_day), ("payment", payment_day)}
    assert events == observations(detect_changes(resources["source"], lake))  # as check_source_history
    for event in events:
        instance.report_runless_asset_event(event)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    # beyond the never-loaded history days (before the backfilled range) requested either way,
    # exactly the two changed days
    history = _requested(before, keys)
    requested = {t: d - history[t] for t, d in _requested(after, keys).items()}
    assert {t: d for t, d in requested.items() if d} == {"sales_order": {order_day}, "payment": {payment_day}}
    assert not history["sales_order"] & {order_day}
    # reported once: the next tick waits for the capture instead of reporting the days again
    assert isinstance(tick(), dg.SkipReason)

    # capturing the days makes the lake's fingerprints equal the source's again; the deletion is a
    # tombstone, the in-place change a second version
    for table, day in observed:
        assert dg.materialize(
            raw_assets,
            resources=build_resources(),
            partition_key=day,
            selection=[raw_asset_key(table)],
            instance=instance,
        ).success
    assert isinstance(tick(), dg.SkipReason)
    payments = lake.read_raw("payment", [payment_day])
    assert payments[DELETED].sum() == 1
    orders = lake.read_raw("sales_order", [order_day])
    assert orders["sales_order_id"].is_duplicated().sum() == 2


def test_the_detector_waits_while_a_raw_capture_is_in_flight(pg, tmp_path, monkeypatch):
    """Compared mid-run, a day the run has not stored yet would look changed and be captured twice."""
    from totesys_assets.automation.change_sensor import raw_capture_in_flight, source_fingerprint_sensor
    from totesys_assets.resources.config import build_resources

    url, _ = pg.new_source("inflight_src", seed=2, days=2)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    resources = build_resources()
    instance = dg.DagsterInstance.ephemeral()
    assert not raw_capture_in_flight(instance)
    for job, selection in (("raw_refresh", None), ("__ASSET_JOB", {dg.AssetKey(["raw", "payment"])})):
        run = instance.add_run(
            dg.DagsterRun(job_name=job, asset_selection=selection, status=dg.DagsterRunStatus.STARTED)
        )
        assert raw_capture_in_flight(instance)
        with dg.build_sensor_context(
            instance=instance, resources={"source": resources["source"], "lake": resources["lake"]}
        ) as ctx:
            result = source_fingerprint_sensor(ctx)
            assert isinstance(result, dg.SkipReason) and "raw capture is running" in result.skip_message
            assert ctx.cursor is None  # nothing compared, nothing remembered
        instance.report_run_canceled(run)
    assert not raw_capture_in_flight(instance)
    # A dimension run does not hold the detector back.
    instance.add_run(
        dg.DagsterRun(
            job_name="__ASSET_JOB",
            asset_selection={dg.AssetKey("dim_staff")},
            status=dg.DagsterRunStatus.STARTED,
        )
    )
    assert not raw_capture_in_flight(instance)


def test_a_chain_run_reads_exactly_what_depends_on_the_changed_tables():
    from totesys_assets.automation.change_sensor import CHAIN_MAX_DAYS, chain_request, chain_selection
    from totesys_assets.resources.lake import Fingerprint

    names = lambda keys: {k.to_user_string() for k in keys}  # noqa: E731
    assert names(chain_selection({"address"})) == {"raw/address", "dim_location", "dim_counterparty"}
    assert names(chain_selection({"sales_order", "department"})) == {
        "raw/sales_order", "raw/department", "dim_staff", "dim_date", "fact_sales_order",
    }  # fmt: skip
    fp = Fingerprint(1, "1")
    one = chain_request({"payment": {"2024-11-14": fp}})
    assert one is not None and one.partition_key == "2024-11-14"
    week = chain_request({"payment": {"2024-11-08": fp}, "sales_order": {"2024-11-14": fp}})
    assert week is not None and week.partition_key is None
    assert week.partition_key_range == dg.PartitionKeyRange("2024-11-08", "2024-11-14")
    assert CHAIN_MAX_DAYS == 7
    assert chain_request({"payment": {"2024-11-07": fp}, "sales_order": {"2024-11-14": fp}}) is None


def test_ticks_compare_the_last_days_and_the_whole_history_every_full_check(pg, tmp_path, monkeypatch):
    """A change today is found by the next tick; an in-place change to an old row by the next check
    of the whole history (TOTESYS_FULL_CHECK_S after the previous one)."""
    from datetime import UTC, datetime, timedelta

    import psycopg

    from totesys_assets.automation.change_sensor import recent_start
    from totesys_assets.partitions import daily_partitions
    from totesys_assets.raw.assets import raw_assets
    from totesys_assets.resources.config import build_resources
    from totesys_assets.star.assets import dimension_assets
    from totesys_assets_tests.helpers import materialize_range

    url, _ = pg.new_source("tiers", seed=3, days=6)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("TOTESYS_FULL_CHECK_S", "600")
    with psycopg.connect(url, autocommit=True) as conn:
        first = conn.execute("SELECT min(last_updated)::date::text FROM staff").fetchone()[0]
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources()
    last = daily_partitions.get_last_partition_key()
    assert materialize_range(raw_assets, resources, first, last, instance=instance).success
    # The dimensions count as loaded (this test has no warehouse): changes then go as one run.
    for ad in dimension_assets:
        instance.report_runless_asset_event(dg.AssetMaterialization(ad.key))
    tick = Ticks(instance, {"source": resources["source"], "lake": resources["lake"]})

    def changed_days(result) -> set[str]:
        assert isinstance(result, dg.SensorResult), result
        (request,) = result.run_requests
        return {request.partition_key} if request.partition_key else set(request.partition_key_range)

    assert "the whole history" in tick().skip_message  # the first tick checks everything
    since = recent_start()
    assert since is not None and f"the days from {since}" in tick().skip_message
    # A slow check paces the next one: checking takes at most CHECK_SHARE of the source's time.
    state = json.loads(tick.cursor)
    slow = {**state, "check_s": 100.0, "check_at": datetime.now(UTC).isoformat()}
    tick.cursor = json.dumps(slow)
    assert "the last check took 100.0 s" in tick(paced=True).skip_message
    assert json.loads(tick.cursor) == slow  # nothing compared, nothing remembered

    with psycopg.connect(url, autocommit=True) as conn:
        old_day = _change_the_oldest_order(conn)
        today = conn.execute(
            "UPDATE payment SET paid = NOT paid WHERE payment_id = "
            "(SELECT max(payment_id) FROM payment WHERE last_updated >= now() - interval '1 day') "
            "RETURNING least(last_updated::date, %s::date)::text",
            (last,),
        ).fetchone()[0]
    assert old_day < since <= today
    assert changed_days(tick()) == {today}  # recent: today's change only
    state = json.loads(tick.cursor)
    state["full_at"] = (datetime.now(UTC) - timedelta(seconds=601)).isoformat()
    tick.cursor = json.dumps(state)
    assert changed_days(tick()) == {old_day}  # the whole history: the old change, today's reported already
    assert "the days from" in tick().skip_message  # both reported; recent ticks again
