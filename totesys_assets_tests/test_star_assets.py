"""The star schemas end to end: real export -> lake (moto S3) -> warehouse (PostgreSQL), via real runs."""

from __future__ import annotations

import time as time_module
from datetime import date, datetime, time
from decimal import Decimal

import dagster as dg
import psycopg
import pytest

from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.specs import WAREHOUSE_TABLES
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.helpers import (
    fact_materializations,
    failure_text,
    materialize_range,
    raw_materializations,
    s3_objects,
)

ALL = [*raw_assets, *star_assets, *star_checks]
RAW, DIMS, FACTS = (dg.AssetSelection.groups(g) for g in ("raw", "dimensions", "facts"))


def run_pipeline(first: str, last: str, *, raise_on_error: bool = True) -> list[dg.ExecuteInProcessResult]:
    """The README's headless sequence: raw range -> dimensions -> facts range (three runs)."""
    resources = build_resources()
    results = [
        materialize_range(ALL, resources, first, last, selection=RAW, raise_on_error=raise_on_error),
        dg.materialize(ALL, resources=resources, selection=DIMS, raise_on_error=raise_on_error),
        materialize_range(ALL, resources, first, last, selection=FACTS, raise_on_error=raise_on_error),
    ]
    return results


def fetch(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def counts(url: str) -> dict[str, int]:
    return {t: fetch(url, f'SELECT count(*) FROM "{t}"')[0][0] for t in WAREHOUSE_TABLES}  # noqa: S608


def check_results(results: list[dg.ExecuteInProcessResult]) -> dict[str, bool]:
    out = {}
    for result in results:
        for ev in result.get_asset_check_evaluations():
            out[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = ev.passed
    return out


@pytest.fixture
def env(monkeypatch, s3, pg):
    bucket = s3.new_bucket()
    warehouse = pg.new_db("wh")
    monkeypatch.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/totes")
    monkeypatch.setenv("WAREHOUSE_DB_URL", warehouse)
    return {"bucket": bucket, "warehouse": warehouse}


@pytest.mark.reference
def test_real_export_builds_the_warehouse(real_export_warehouse, s3, monkeypatch):
    """raw (backfilled once for the suite) -> dimensions -> facts over the whole export.

    The dimensions and facts runs are those of the shared `real_export_warehouse` fixture.
    """
    real_export_lake = real_export_warehouse.lake
    monkeypatch.setenv("TOTESYS_DB_URL", real_export_lake.source_url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", real_export_lake.lake_url)
    monkeypatch.setenv("WAREHOUSE_DB_URL", real_export_warehouse.url)
    results = real_export_warehouse.results
    assert all(r.success for r in results)
    wh = real_export_warehouse.url
    got = counts(wh)
    assert {k: v for k, v in got.items() if k != "dim_date"} == {
        "dim_staff": 20, "dim_location": 30, "dim_design": 473, "dim_currency": 3, "dim_counterparty": 20,
        "dim_payment_type": 4, "dim_transaction": 15836, "fact_sales_order": 11187,
        "fact_purchase_order": 4649, "fact_payment": 15836,
    }  # fmt: skip
    # dim_date: contiguous from 2022-11-01 to at least today + 365.
    first, last, n = fetch(wh, "SELECT min(date_id), max(date_id), count(*) FROM dim_date")[0]
    assert first == date(2022, 11, 1) and (last - first).days + 1 == n
    assert last >= date.today().replace(year=date.today().year + 1) or (last - date.today()).days >= 365
    assert fetch(wh, "SELECT quarter, day_of_week, day_name FROM dim_date WHERE date_id = '2024-03-31'") == [
        (1, 7, "Sunday")
    ]

    # Spot values against the real rows.
    assert fetch(
        wh, "SELECT first_name, last_name, department_name, location FROM dim_staff WHERE staff_id = 17"
    ) == [("Irving", "O'Keefe", "Production", "Leeds")]
    assert fetch(wh, "SELECT currency_code, currency_name FROM dim_currency ORDER BY 1") == [
        ("EUR", "Euro"), ("GBP", "Pound Sterling"), ("USD", "US Dollar"),
    ]  # fmt: skip
    row = fetch(
        wh,
        "SELECT sales_staff_id, units_sold, unit_price, created_date, created_time, agreed_delivery_date "
        "FROM fact_sales_order WHERE sales_order_id = 2",
    )
    assert row == [
        (19, 42972, Decimal("3.94"), date(2022, 11, 3), time(14, 20, 52, 186000), date(2022, 11, 7))
    ]
    assert fetch(wh, "SELECT count(*) FROM dim_transaction WHERE sales_order_id IS NULL") == [(4649,)]

    # Every check passed (PK, NOT NULL, FKs resolve, one fact row per lake version).
    checks = check_results(results)
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}
    assert "fact_payment:reconciles_with_lake" in checks

    # The processed zone holds the star schema as Parquet too.
    star = s3_objects(s3.client, real_export_lake.bucket, "totes/star/dim_staff/")
    assert list(star) == ["totes/star/dim_staff/dim_staff.parquet"]
    assert star["totes/star/dim_staff/dim_staff.parquet"].height == 20
    fact_days = s3_objects(s3.client, real_export_lake.bucket, "totes/star/fact_sales_order/")
    assert sum(f.height for f in fact_days.values()) == 11187

    # Running every layer again (the last month) changes nothing: same rows, same surrogate keys.
    before = fetch(wh, "SELECT * FROM fact_payment ORDER BY payment_record_id")
    again = run_pipeline("2024-10-16", "2024-11-15")
    assert all(r.success for r in again)
    assert counts(wh) == got
    assert fetch(wh, "SELECT * FROM fact_payment ORDER BY payment_record_id") == before
    raw_meta = raw_materializations(again[0], "payment")[0].metadata
    assert raw_meta["run_new_versions"].value == 0 and raw_meta["run_objects_written"].value == 0
    facts_meta = fact_materializations(again[2], "fact_payment")[0].metadata
    assert facts_meta["rows_inserted"].value == 0 and facts_meta["versions_skipped"].value > 500


def test_history_appends_new_versions_and_current_views_show_the_newest(pg, env, monkeypatch):
    source, sim = pg.new_source(
        "hist_src", seed=11, start=datetime(2024, 1, 1, 9), end=datetime(2024, 1, 8, 12)
    )
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    first = "2024-01-01"
    end = fetch(source, "SELECT max(last_updated) FROM payment")[0][0].date().isoformat()
    assert all(r.success for r in run_pipeline(first, end))
    wh = env["warehouse"]
    old_rows = fetch(wh, "SELECT * FROM fact_payment ORDER BY payment_record_id")
    old_orders = fetch(wh, "SELECT * FROM fact_sales_order ORDER BY sales_record_id")

    # A few business days later: new orders, payments flipping to paid, in-place changes.
    counts_advanced = sim.advance(to=datetime(2024, 1, 12, 18))
    assert sum(counts_advanced.values()) > 0
    new_end = fetch(source, "SELECT max(last_updated) FROM payment")[0][0].date().isoformat()
    assert all(r.success for r in run_pipeline(first, new_end))

    # Old versions untouched, record ids stable; new versions appended after them.
    first_payments = "SELECT * FROM fact_payment ORDER BY payment_record_id LIMIT %s"
    assert fetch(wh, first_payments, (len(old_rows),)) == old_rows
    first_orders = "SELECT * FROM fact_sales_order ORDER BY sales_record_id LIMIT %s"
    assert fetch(wh, first_orders, (len(old_orders),)) == old_orders
    flipped = fetch(
        wh,
        "SELECT payment_id FROM fact_payment GROUP BY payment_id HAVING bool_or(paid) AND NOT bool_and(paid)",
    )
    assert flipped, "some payments should have an unpaid and a paid version"
    pid = flipped[0][0]
    assert fetch(wh, "SELECT paid FROM fact_payment_current WHERE payment_id = %s", (pid,)) == [(True,)]
    assert (
        fetch(wh, "SELECT count(*) FROM fact_payment_current")[0][0]
        == fetch(source, "SELECT count(*) FROM payment")[0][0]
    )
    # The warehouse's current state equals the source's.
    src_paid = fetch(source, "SELECT payment_id, paid, payment_amount FROM payment ORDER BY 1")
    assert (
        fetch(wh, "SELECT payment_id, paid, payment_amount FROM fact_payment_current ORDER BY 1") == src_paid
    )


@pytest.fixture
def small_source(pg, monkeypatch):
    url, sim = pg.new_source("bad_star", seed=5, days=4)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    first = fetch(url, "SELECT min(last_updated)::date FROM address")[0][0].isoformat()
    last = fetch(url, "SELECT max(last_updated)::date FROM payment")[0][0].isoformat()
    return url, first, last


def test_a_fact_value_without_its_dimension_row_is_quarantined_and_named(small_source, env):
    url, first, last = small_source
    assert all(r.success for r in run_pipeline(first, last))
    before = fetch(env["warehouse"], "SELECT * FROM fact_sales_order ORDER BY 1")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE sales_order DROP CONSTRAINT sales_order_design_id_fkey")
        order_id = conn.execute(
            "UPDATE sales_order SET design_id = 99999, last_updated = last_updated + interval '1 second' "
            "WHERE sales_order_id = (SELECT max(sales_order_id) FROM sales_order) RETURNING sales_order_id"
        ).fetchone()[0]
    results = run_pipeline(first, last, raise_on_error=False)
    # The version without its design is held back (the other facts and versions load as usual);
    # the check fails and the run with it, naming the row, the column and the value.
    assert results[0].success and results[1].success and not results[2].success
    assert fetch(env["warehouse"], "SELECT * FROM fact_sales_order ORDER BY 1") == before
    assert fact_materializations(results[2], "fact_sales_order") and fact_materializations(
        results[2], "fact_payment"
    )
    (failed,) = [e for e in results[2].get_asset_check_evaluations() if not e.passed]
    assert (failed.asset_key, failed.check_name) == (dg.AssetKey("fact_sales_order"), "no_rejected_versions")
    for part in (f"sales_order.sales_order_id={order_id}", "design_id = '99999'", "has no row in dim_design"):
        assert part in failed.description and part in failure_text(results), part
    assert fetch(
        env["warehouse"], "SELECT source_id, column_name, value FROM quarantine.open_rejections"
    ) == [(order_id, "design_id", "99999")]


def test_selecting_one_fact_loads_that_fact_alone(small_source, env):
    url, first, last = small_source
    resources = build_resources()
    assert materialize_range(ALL, resources, first, last, selection=RAW).success
    assert dg.materialize(ALL, resources=resources, selection=DIMS).success
    one = materialize_range(
        ALL, resources, first, last, selection=dg.AssetSelection.assets("fact_purchase_order")
    )
    assert one.success
    assert {e.asset_key for e in one.get_asset_materialization_events()} == {
        dg.AssetKey("fact_purchase_order")
    }
    got = counts(env["warehouse"])
    assert got["fact_purchase_order"] > 0
    assert got["fact_payment"] == got["fact_sales_order"] == 0


def test_a_failing_dimension_check_blocks_the_facts_and_checks_run_alone(small_source, env):
    """The checks of each group share one step, yet each is its own blocking check: a dimension
    check that fails (a NULL stored behind the loader's back) keeps the facts of the same run from
    loading, and one check can be run alone."""
    url, first, last = small_source
    resources = build_resources()
    assert materialize_range(ALL, resources, first, last, selection=RAW).success
    assert dg.materialize(ALL, resources=resources, selection=DIMS).success
    with psycopg.connect(env["warehouse"], autocommit=True) as conn:
        conn.execute("ALTER TABLE dim_staff ALTER COLUMN location DROP NOT NULL")
        conn.execute(
            "INSERT INTO dim_staff (staff_id, first_name, last_name, department_name, location, email_address) "
            "VALUES (99999, 'Ghost', 'Row', 'Sales', NULL, 'ghost@terrifictotes.com')"
        )
    both = materialize_range(ALL, resources, first, last, selection=DIMS | FACTS, raise_on_error=False)
    assert check_results([both])["dim_staff:not_null"] is False
    assert not [m for m in both.get_asset_materialization_events() if m.asset_key.path[0].startswith("fact_")]
    assert counts(env["warehouse"])["fact_sales_order"] == 0

    only = dg.AssetCheckKey(dg.AssetKey("dim_staff"), "not_null")
    alone = dg.materialize(
        ALL, resources=resources, selection=dg.AssetSelection.checks(only), raise_on_error=False
    )
    assert check_results([alone]) == {"dim_staff:not_null": False}
    assert not alone.get_asset_materialization_events()


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("UPDATE currency SET currency_code = 'JPY', last_updated = now() WHERE currency_id = 3",
         ("dim_currency", "currency_code", "JPY")),
        # (a bad value in a fact's source is quarantined instead: test_a_malformed_date_...)
    ],
)  # fmt: skip
def test_bad_source_values_fail_with_table_column_and_value(small_source, env, statement, expected):
    url, first, last = small_source
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)
    today = date.today().isoformat()
    results = run_pipeline(first, max(last, today), raise_on_error=False)
    assert not all(r.success for r in results)
    message = failure_text(results)
    for part in expected:
        assert part in message, message


def test_a_malformed_date_is_quarantined_the_rest_loads_and_the_fix_turns_the_check_green(small_source, env):
    """One order of a day gets a malformed agreed_delivery_date. The day's other orders (and the
    other facts) load; the rejected version is queryable and fails the check, naming it. Once the
    source row is fixed, re-running the day loads the corrected version and the check passes."""
    url, first, last = small_source
    wh = env["warehouse"]
    day, order_id, others = fetch(
        url,
        "SELECT last_updated::date, min(sales_order_id), count(*) - 1 FROM sales_order "
        "GROUP BY 1 HAVING count(*) > 3 ORDER BY 1 DESC LIMIT 1",
    )[0]
    with psycopg.connect(url, autocommit=True) as conn:
        bad_version = conn.execute(
            "UPDATE sales_order SET agreed_delivery_date = '2024-13-45', "
            "last_updated = last_updated + interval '1 millisecond' WHERE sales_order_id = %s "
            "RETURNING last_updated",
            (order_id,),
        ).fetchone()[0]
    results = run_pipeline(first, last, raise_on_error=False)
    assert results[0].success and results[1].success and not results[2].success

    # the valid orders of the day are in, the bad version is not; the other facts loaded in full
    loaded = fetch(
        wh, "SELECT sales_order_id FROM fact_sales_order WHERE last_updated_date = %s ORDER BY 1", (day,)
    )
    assert len(loaded) == others and (order_id,) not in loaded
    assert counts(wh)["fact_payment"] == fetch(url, "SELECT count(*) FROM payment")[0][0]
    checks = check_results(results)
    assert checks.pop("fact_sales_order:no_rejected_versions") is False
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}  # reconciliation included
    (failed,) = [e for e in results[2].get_asset_check_evaluations() if not e.passed]
    assert failed.severity == dg.AssetCheckSeverity.ERROR
    expected = [
        "fact_sales_order",
        f"sales_order.sales_order_id={order_id}",
        "agreed_delivery_date",
        "'2024-13-45'",
    ]
    for part in expected:
        assert part in failed.description, failed.description
        assert part in failure_text(results)  # the run's error, which the run-failure alert carries
    # queryable: the rejected version, with its value, the reason and the source row
    (rejected,) = fetch(
        wh,
        "SELECT fact, source_table, source_id, last_updated, column_name, value, reason, "
        "source_row->>'agreed_delivery_date' FROM quarantine.open_rejections",
    )
    assert rejected == (
        "fact_sales_order", "sales_order", order_id, bad_version, "agreed_delivery_date", "2024-13-45",
        "is not a %Y-%m-%d date", "2024-13-45",
    )  # fmt: skip

    # The source is fixed (a new version of the row, the same day); the day runs again.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sales_order SET agreed_delivery_date = '2024-12-20', "
            "last_updated = last_updated + interval '1 millisecond' WHERE sales_order_id = %s",
            (order_id,),
        )
    again = run_pipeline(day.isoformat(), day.isoformat())
    assert all(r.success for r in again)
    assert check_results(again)["fact_sales_order:no_rejected_versions"] is True
    assert fetch(
        wh, "SELECT agreed_delivery_date FROM fact_sales_order_current WHERE sales_order_id = %s", (order_id,)
    ) == [(date(2024, 12, 20),)]
    assert not fetch(wh, "SELECT * FROM quarantine.open_rejections")
    # the rejected version stays on record, superseded
    assert fetch(wh, "SELECT source_id, value FROM quarantine.rejected_versions") == [
        (order_id, "2024-13-45")
    ]


def test_dimensions_load_incrementally_and_match_a_full_rebuild(pg, env, s3, monkeypatch):
    """After the first (full) load, a dimension reads only the raw objects written since."""
    from totesys_assets.resources.lake import LakeResource
    from totesys_assets.star import transforms

    source, sim = pg.new_source(
        "incr_src", seed=13, start=datetime(2024, 1, 1, 9), end=datetime(2024, 1, 8, 12)
    )
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    resources = build_resources()
    instance = dg.DagsterInstance.ephemeral()
    last = fetch(source, "SELECT max(last_updated) FROM payment")[0][0].date().isoformat()
    assert materialize_range(ALL, resources, "2024-01-01", last, selection=RAW, instance=instance).success
    first = dg.materialize(ALL, resources=resources, selection=DIMS, instance=instance)
    meta = first.asset_materializations_for_node("dim_transaction")[0].metadata
    assert meta["load_mode"].value == "full"

    # Two rounds of new activity, each extracted after the previous one (whole seconds apart, as
    # object stores keep whole-second modification times and the watermark is inclusive).
    for day in (9, 10):
        time_module.sleep(1.1)
        sim.advance(to=datetime(2024, 1, day, 18))
        days = (f"2024-01-{day - 1:02d}", f"2024-01-{day:02d}")
        assert materialize_range(ALL, resources, *days, selection=RAW, instance=instance).success
        second = dg.materialize(ALL, resources=resources, selection=DIMS, instance=instance)
    meta = second.asset_materializations_for_node("dim_transaction")[0].metadata
    assert meta["load_mode"].value == "incremental"
    # The last load read the objects written since the previous one (days 8-10), not the history.
    changed = fetch(source, "SELECT count(*) FROM transaction WHERE last_updated >= '2024-01-08'")[0][0]
    assert meta["rows_in_frame"].value == changed < fetch(source, "SELECT count(*) FROM transaction")[0][0]
    assert meta["rows_inserted"].value > 0

    # The incremental result equals a full rebuild from the whole lake, in the warehouse and the
    # processed zone alike.
    lake = LakeResource(url=f"s3://{env['bucket']}/totes", s3=resources["lake"].s3)
    expected = transforms.dim_transaction(lake.read_raw("transaction")).rows()
    assert fetch(env["warehouse"], "SELECT * FROM dim_transaction ORDER BY 1") == expected
    processed = s3_objects(s3.client, env["bucket"], "totes/star/dim_transaction/")
    assert processed["totes/star/dim_transaction/dim_transaction.parquet"].rows() == expected
    dates = fetch(env["warehouse"], "SELECT min(date_id), count(*) FROM dim_date")[0]
    assert dates[0] == date(2022, 11, 1)

    # A forced full reload (run config) finds nothing to change.
    third = dg.materialize(
        ALL, resources=resources, selection=dg.AssetSelection.assets("dim_transaction"), instance=instance,
        run_config={"ops": {"dim_transaction": {"config": {"full_reload": True}}}},
    )  # fmt: skip
    meta = third.asset_materializations_for_node("dim_transaction")[0].metadata
    assert meta["load_mode"].value == "full"
    assert meta["rows_inserted"].value == 0 and meta["rows_updated"].value == 0
