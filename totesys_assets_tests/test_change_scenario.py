"""The real-data change scenario, through the dagster CLI: the 2024-11-15 export backfilled, then
the source made equal to the 2025-02-25 export (its 60 silent in-place updates and its new rows;
payment kept from 2024-11-15, which the later export lacks) plus one deleted sales order.

The lake is a folder, as in the quick start; the S3 lake has its own real-export backfill
(test_raw_assets.py), and moto's S3 would make this scenario's thousands of objects its slowest part."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import psycopg
import pytest
from dagster_aws.s3 import S3Resource
from polars.testing import assert_frame_equal
from psycopg import sql

from totesys_assets.resources.lake import DELETED, ROW_HASH, LakeResource
from totesys_assets.resources.source import TotesysSource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.simulator import Simulator, copy_load
from totesys_assets.simulator.reference_loader import read_export
from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_assets.star.assets import DIMENSIONS, FACTS
from totesys_assets_tests.conftest import reference_path
from totesys_assets_tests.e2e_support import write_quick_start_instance

FIRST = "2022-11-03"
DELETED_ORDER = 2  # a sales order of the 2024-11-15 export, with its transaction


def _materialize(env: dict, select: str, days: tuple[str, str] | None = None) -> None:
    cmd = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "totesys_assets.definitions"]
    cmd += ["--select", select]
    if days:
        cmd += ["--partition-range", f"{days[0]}...{days[1]}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _round(env: dict, last: str) -> None:
    """The README's three commands."""
    _materialize(env, "group:raw", (FIRST, last))
    _materialize(env, "group:dimensions")
    _materialize(env, "group:facts", (FIRST, last))


def _source_frames(url: str) -> dict[str, pl.DataFrame]:
    source = TotesysSource(url=url)
    return {t: source.extract(spec, None, None) for t, spec in SOURCE_TABLES.items()}


def _facts(wh: WarehouseResource) -> dict[str, pl.DataFrame]:
    return {f.name: wh.read_table(f.name) for f in FACTS}


@pytest.mark.reference
@pytest.mark.slow
def test_in_place_updates_new_rows_and_a_delete_reach_every_table_and_a_second_round_changes_nothing(
    pg, tmp_path
):
    old, new = reference_path("oltp_2024-11-15_parquet"), reference_path("oltp_2025-02-25_json")
    source_url, warehouse_url = pg.new_db("scenario_src"), pg.new_db("scenario_wh")
    sim = Simulator(source_url)
    sim.create_schema()
    sim.load_reference(old)
    lake_url = str(tmp_path / "lake")
    # The quick start's instance (totesys-dev's dagster.yaml: PostgreSQL storage), as users run it.
    write_quick_start_instance(tmp_path, pg.new_db("scenario_dagster"))
    env = {
        **os.environ,
        "TOTESYS_DB_URL": source_url,
        "WAREHOUSE_DB_URL": warehouse_url,
        "TOTESYS_LAKE_URL": lake_url,
        "DAGSTER_HOME": str(tmp_path),
        "TOTESYS_HOME": str(tmp_path / "home"),
    }
    wh = WarehouseResource(url=warehouse_url)
    _round(env, "2024-11-15")
    before = _facts(wh)

    # The source becomes the later export (payment from the earlier one), then one order is deleted
    # (its transaction's sales_order_id becomes NULL: the source's ON DELETE SET NULL).
    frames = read_export(new)
    frames["payment"] = read_export(old)["payment"]
    with psycopg.connect(source_url) as conn:
        copy_load.replace_all(conn, frames)
        conn.execute("DELETE FROM sales_order WHERE sales_order_id = %s", (DELETED_ORDER,))
    _round(env, "2025-02-25")
    after = _facts(wh)

    current = _source_frames(source_url)
    # every dimension is the current source
    for table in DIMENSIONS:
        expected = table.transform(*(current[s] for s in table.sources))
        got = wh.read_table(table.name).select(expected.columns).sort(table.spec.primary_key)
        assert_frame_equal(got, expected)
    dim_transaction = wh.read_table("dim_transaction")
    orphan = dim_transaction.filter(
        pl.col("transaction_id").is_in(
            frames["transaction"]
            .filter(pl.col("sales_order_id") == DELETED_ORDER)["transaction_id"]
            .implode()
        )
    )
    assert orphan.height == 1 and orphan["sales_order_id"].item() is None

    lake = LakeResource(url=lake_url, s3=S3Resource())
    for fact in FACTS:
        spec, pk = fact.spec, SOURCE_TABLES[fact.sources[0]].primary_key
        natural_id = spec.natural_key[0]
        # every *_current view is the current source (the deleted order is not in it)
        expected = fact.transform(current[fact.sources[0]]).drop("captured_at")
        view = wh.read_table(f"{fact.name}_current").select(expected.columns)
        assert_frame_equal(view.sort(natural_id), expected.sort(natural_id))
        # every distinct captured version once
        stored = lake.read_raw(fact.sources[0]).filter(~pl.col(DELETED))
        versions = stored.select(pk, "last_updated", ROW_HASH).unique().height
        assert after[fact.name].height == versions, fact.name
        # earlier rows and their record ids are untouched
        assert_frame_equal(after[fact.name].head(before[fact.name].height), before[fact.name])

    # in-place changes became new versions with the source's last_updated
    sales = after["fact_sales_order"]
    changed = sales.filter(pl.col("sales_order_id").is_duplicated())
    assert sales.height - before["fact_sales_order"].height >= 21
    assert changed.height >= 2 * 21
    # the deletion is recorded, and the history keeps the order's versions
    deletions = wh.fetch_one_dict(
        sql.SQL(
            "SELECT count(*) AS n, min(observed_at) AS at FROM fact_deletions "
            "WHERE fact = 'fact_sales_order' AND source_id = %(id)s"
        ),
        {"id": DELETED_ORDER},
    )
    assert deletions["n"] == 1 and deletions["at"] is not None
    assert sales.filter(pl.col("sales_order_id") == DELETED_ORDER).height >= 1

    # a second round changes nothing
    tables = {n: wh.read_table(n) for n in WAREHOUSE_TABLES if n != "dim_date"}
    _round(env, "2025-02-25")
    for name, frame in tables.items():
        assert_frame_equal(wh.read_table(name), frame)
