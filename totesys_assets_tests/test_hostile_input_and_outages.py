"""Regression tests for what already held before issue 15 and must keep holding.

Hostile text and edge values travel source -> lake (moto S3) -> warehouse cell for cell; a source,
S3 or warehouse that cannot be reached fails the run naming it, with no secret in the error and
nothing stored changed, and the next run recovers.
"""

from __future__ import annotations

import socket
from datetime import date
from decimal import Decimal

import dagster as dg
import psycopg
import pytest

from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.helpers import failure_text, materialize_range, s3_objects

ALL = [*raw_assets, *star_assets, *star_checks]
RAW, DIMS, FACTS = (dg.AssetSelection.groups(g) for g in ("raw", "dimensions", "facts"))
HOSTILE = [
    "Zoë 🙂👜 naïve",
    "x" * 5000,
    "'); DROP TABLE dim_staff; --",
    "first line\nsecond line\r\nthird",
    "\\N",
    "NULL",
    'tab\there, comma; "quotes"',
    "",
]


def fetch(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type]


def run_pipeline(first: str, last: str, **kwargs) -> list[dg.ExecuteInProcessResult]:
    resources = build_resources()
    return [
        materialize_range(ALL, resources, first, last, selection=RAW, **kwargs),
        dg.materialize(ALL, resources=resources, selection=DIMS, **kwargs),
        materialize_range(ALL, resources, first, last, selection=FACTS, **kwargs),
    ]


@pytest.fixture
def pipeline_env(pg, s3, monkeypatch):
    source, _ = pg.new_source("hostile_src", seed=9, days=3)
    bucket = s3.new_bucket()
    warehouse = pg.new_db("hostile_wh")
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    monkeypatch.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/totes")
    monkeypatch.setenv("WAREHOUSE_DB_URL", warehouse)
    first = fetch(source, "SELECT min(last_updated)::date FROM address")[0][0].isoformat()
    return {"source": source, "bucket": bucket, "warehouse": warehouse, "first": first}


def test_hostile_text_and_edge_values_load_cell_for_cell(pipeline_env, s3):
    source, wh = pipeline_env["source"], pipeline_env["warehouse"]
    with psycopg.connect(source, autocommit=True) as conn:
        for staff_id, text in enumerate(HOSTILE, 1):
            conn.execute(
                "UPDATE staff SET first_name = %s, last_name = %s, last_updated = now() WHERE staff_id = %s",
                (text, text[::-1], staff_id),
            )
        conn.execute(
            "UPDATE design SET design_name = %s, last_updated = now() WHERE design_id = 1", (HOSTILE[2],)
        )
        orders = conn.execute(
            "UPDATE sales_order SET units_sold = -5, unit_price = 0.00, last_updated = now() "
            "WHERE sales_order_id IN (SELECT sales_order_id FROM sales_order ORDER BY 1 LIMIT 2) "
            "RETURNING sales_order_id"
        ).fetchall()
    today = date.today().isoformat()
    results = run_pipeline(pipeline_env["first"], today)
    assert all(r.success for r in results)
    checks = {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for r in results
        for e in r.get_asset_check_evaluations()
    }
    assert checks and all(checks.values()), {k: v for k, v in checks.items() if not v}

    got = fetch(
        wh,
        "SELECT staff_id, first_name, last_name FROM dim_staff WHERE staff_id <= %s ORDER BY 1",
        (len(HOSTILE),),
    )
    assert got == [(i, t, t[::-1]) for i, t in enumerate(HOSTILE, 1)]
    assert fetch(wh, "SELECT design_name FROM dim_design WHERE design_id = 1") == [(HOSTILE[2],)]
    assert fetch(wh, "SELECT count(*) FROM dim_staff") == fetch(source, "SELECT count(*) FROM staff")
    ids = [o[0] for o in orders]
    assert fetch(
        wh,
        "SELECT sales_order_id, units_sold, unit_price FROM fact_sales_order_current WHERE sales_order_id = ANY(%s) ORDER BY 1",
        (ids,),
    ) == [(i, -5, Decimal("0.00")) for i in ids]
    # the lake holds the same text, byte for byte
    day_objects = s3_objects(s3.client, pipeline_env["bucket"], f"totes/raw/staff/{today}.parquet")
    lake_names = sorted(
        day_objects[f"totes/raw/staff/{today}.parquet"].select("staff_id", "first_name").rows()
    )
    assert lake_names[: len(HOSTILE)] == list(enumerate(HOSTILE, 1))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_s3_fails_the_run_naming_it_and_the_next_run_recovers(pipeline_env, s3, monkeypatch):
    secret = "s3-secret-never-shown"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    down = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", down)
    first, last = pipeline_env["first"], date.today().isoformat()
    failed = materialize_range(ALL, build_resources(), first, last, selection=RAW, raise_on_error=False)
    assert not failed.success
    message = failure_text(failed)
    assert down in message and secret not in message
    assert s3.keys(pipeline_env["bucket"]) == []  # nothing written

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    assert materialize_range(ALL, build_resources(), first, last, selection=RAW).success
    assert s3.keys(pipeline_env["bucket"], "totes/raw/sales_order/")


def test_an_unreachable_warehouse_fails_the_run_naming_it_and_the_next_run_recovers(
    pipeline_env, s3, monkeypatch
):
    first, last = pipeline_env["first"], date.today().isoformat()
    resources = build_resources()
    assert materialize_range(ALL, resources, first, last, selection=RAW).success
    lake_before = s3.keys(pipeline_env["bucket"])
    down = f"postgresql://loader:wh-secret-never-shown@127.0.0.1:{_closed_port()}/warehouse"
    monkeypatch.setenv("WAREHOUSE_DB_URL", down)
    failed = [
        dg.materialize(ALL, resources=build_resources(), selection=DIMS, raise_on_error=False),
        materialize_range(ALL, build_resources(), first, last, selection=FACTS, raise_on_error=False),
    ]
    assert not any(r.success for r in failed)
    message = failure_text(failed)
    assert "cannot connect to the warehouse" in message and "loader:***@127.0.0.1" in message
    assert "wh-secret-never-shown" not in message
    assert s3.keys(pipeline_env["bucket"]) == lake_before  # no processed zone written, nothing changed

    monkeypatch.setenv("WAREHOUSE_DB_URL", pipeline_env["warehouse"])
    again = [
        dg.materialize(ALL, resources=build_resources(), selection=DIMS),
        materialize_range(ALL, build_resources(), first, last, selection=FACTS),
    ]
    assert all(r.success for r in again)
    assert fetch(pipeline_env["warehouse"], "SELECT count(*) FROM fact_payment") == fetch(
        pipeline_env["source"], "SELECT count(*) FROM payment"
    )


def test_an_unreachable_source_fails_the_run_naming_it_and_the_next_run_recovers(
    pipeline_env, s3, monkeypatch
):
    first, last = pipeline_env["first"], date.today().isoformat()
    down = f"postgresql://reader:src-secret-never-shown@127.0.0.1:{_closed_port()}/totesys"
    monkeypatch.setenv("TOTESYS_DB_URL", down)
    failed = materialize_range(ALL, build_resources(), first, last, selection=RAW, raise_on_error=False)
    assert not failed.success
    message = failure_text(failed)
    assert "cannot connect to the totesys source" in message and "src-secret-never-shown" not in message
    assert s3.keys(pipeline_env["bucket"]) == []

    monkeypatch.setenv("TOTESYS_DB_URL", pipeline_env["source"])
    assert materialize_range(ALL, build_resources(), first, last, selection=RAW).success
    assert s3.keys(pipeline_env["bucket"], "totes/raw/payment/")
