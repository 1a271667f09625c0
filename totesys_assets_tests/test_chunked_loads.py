"""Long runs a chunk of days at a time (TOTESYS_CHUNK_ROWS): the same lake objects, warehouse rows
and record ids as runs that hold the whole range at once, on the same source."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
from dagster_aws.s3 import S3Resource

from totesys_assets.partitions import day_chunks
from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.lake import CAPTURED_AT, LakeResource, RawLakeIOManager
from totesys_assets.resources.source import TotesysSource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import WAREHOUSE_TABLES
from totesys_assets.star import assets as star_assets_module
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.helpers import fact_materializations, failure_text, materialize_range

ALL = [*raw_assets, *star_assets, *star_checks]
RAW, DIMS, FACTS = (dg.AssetSelection.groups(g) for g in ("raw", "dimensions", "facts"))
# The first partition (2022-11-03) also holds the rows seeded before it, from 2022-10-20.
FIRST, LAST = "2022-11-03", "2022-12-20"
CHUNKED, WHOLE = "20", str(10**9)  # chunks of a day or a few (at most 20 rows); one of all 48 days
# Small enough that the first fact loads take the ADBC first-load path, whose serial ids are
# numbered chunk by chunk.
BULK_MIN_ROWS = 200


def test_day_chunks_are_consecutive_whole_days_within_the_row_budget(monkeypatch):
    days = [f"2024-01-{d:02d}" for d in range(1, 8)]
    rows = {days[0]: 40, days[1]: 70, days[2]: 250, days[4]: 30, days[5]: 60, days[6]: 10}
    # a day over the budget is a chunk of its own; a missing day has no rows
    assert day_chunks(days, rows, 100) == [days[:1], days[1:2], days[2:3], days[3:]]
    assert day_chunks(days, rows, 89) == [days[:1], days[1:2], days[2:3], days[3:5], days[5:]]
    assert day_chunks(days[:1], {}, 100) == [days[:1]]
    monkeypatch.setenv("TOTESYS_CHUNK_ROWS", "1000")
    assert day_chunks(days, rows) == [days]
    monkeypatch.setenv("TOTESYS_CHUNK_ROWS", "0")
    with pytest.raises(ValueError, match="TOTESYS_CHUNK_ROWS must be a whole number of rows"):
        day_chunks(days, rows)


def _resources(source: str, lake_dir: Path, warehouse: str) -> dict:
    lake = LakeResource(url=str(lake_dir), s3=S3Resource())
    return {
        "source": TotesysSource(url=source),
        "warehouse": WarehouseResource(url=warehouse, bulk_load_min_rows=BULK_MIN_ROWS),
        "lake": lake,
        "raw_io_manager": RawLakeIOManager(lake=lake),
        "instance": dg.DagsterInstance.ephemeral(),
    }


def _run(resources: dict, selection: dg.AssetSelection, chunk_rows: str, mp: pytest.MonkeyPatch):
    """A run of one setup, on its own instance (the second dimension load is incremental)."""
    mp.setenv("TOTESYS_CHUNK_ROWS", chunk_rows)
    # the large dimensions (dim_transaction, dim_design) a range of 40 keys at a time, or at once
    mp.setattr(star_assets_module, "KEYS_PER_RANGE", 40 if chunk_rows == CHUNKED else 10**9)
    instance = resources["instance"]
    kwargs = dict(selection=selection, raise_on_error=False, instance=instance)
    if selection is DIMS:
        result = dg.materialize(ALL, resources=_without_instance(resources), **kwargs)
    else:
        result = materialize_range(ALL, _without_instance(resources), FIRST, LAST, **kwargs)
    assert result.success, failure_text(result)
    if selection is not DIMS:  # the run said how it split the days
        said = " ".join(str(e.user_message) for e in instance.all_logs(result.run_id))
        assert ("chunks of at most 20 rows" in said) is (chunk_rows == CHUNKED), said[-2000:]
    return result


def _without_instance(resources: dict) -> dict:
    return {k: v for k, v in resources.items() if k != "instance"}


def _objects(lake_dir: Path, zone: str) -> dict[str, pl.DataFrame]:
    """Every object of a zone, read independently of the lake code, without the capture time
    (each lake was captured by its own runs)."""
    root = lake_dir / zone
    return {
        str(p.relative_to(root)): pl.read_parquet(p).drop(CAPTURED_AT, "captured_at", strict=False)
        for p in sorted(root.rglob("*.parquet"))
    }


def _warehouse(url: str) -> dict[str, list[tuple]]:
    """Every warehouse and quarantine table in key order (facts in record-id order), capture times
    left out."""
    out = {}
    with psycopg.connect(url) as conn:
        for name, spec in WAREHOUSE_TABLES.items():
            cols = [c.name for c in spec.columns if c.name != "captured_at"]
            out[name] = conn.execute(
                f'SELECT {", ".join(cols)} FROM "{name}" ORDER BY "{spec.primary_key}"'  # noqa: S608
            ).fetchall()
        for table in ("quarantine.rejected_versions", "public.fact_deletions"):
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3")  # noqa: S608
            names = [d.name for d in cur.description or []]
            out[table.split(".")[1]] = [
                tuple(v for n, v in zip(names, r, strict=False) if n != "observed_at") for r in cur.fetchall()
            ]
    return out


def _change_the_source(url: str) -> None:
    """In-place changes in several chunks: new contents at the same last_updated, a row moved to
    a later day, one backdated to an earlier day (its newest capture then sits in an older day
    object), a deletion."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE transaction SET last_updated = '2022-11-04 08:00' "
            "WHERE transaction_id = (SELECT max(transaction_id) FROM transaction "
            "WHERE last_updated >= '2022-12-10' AND purchase_order_id IS NOT NULL)"
        )
        for day in ("2022-11-05", "2022-11-21", "2022-12-07"):  # (three chunks of changed days)
            conn.execute(
                "UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = "
                "(SELECT min(sales_order_id) FROM sales_order WHERE last_updated >= %s)",
                (day,),
            )
        conn.execute(
            "UPDATE purchase_order SET item_quantity = item_quantity + 2, last_updated = '2022-12-18 10:00' "
            "WHERE purchase_order_id = (SELECT min(purchase_order_id) FROM purchase_order "
            "WHERE last_updated >= '2022-11-20')"
        )
        conn.execute(
            "DELETE FROM payment WHERE payment_id = "
            "(SELECT max(payment_id) FROM payment WHERE last_updated < '2022-12-01')"
        )


def test_chunked_runs_store_and_load_exactly_what_one_chunk_runs_do(pg, tmp_path, monkeypatch):
    source, _ = pg.new_source(
        "chunks_src", seed=5, start=datetime(2022, 10, 20, 9), end=datetime(2022, 12, 20, 17)
    )
    one = _resources(source, tmp_path / "lake_one", pg.new_db("chunks_one"))
    chunked = _resources(source, tmp_path / "lake_chunked", pg.new_db("chunks_chunked"))

    for round_ in (1, 2):
        if round_ == 2:  # the same days again after in-place changes: merges, tombstones, staged loads
            _change_the_source(source)
        facts = {}
        for resources, chunk_rows in ((one, WHOLE), (chunked, CHUNKED)):
            _run(resources, RAW, chunk_rows, monkeypatch)
            _run(resources, DIMS, chunk_rows, monkeypatch)
            facts[chunk_rows] = _run(resources, FACTS, chunk_rows, monkeypatch)
        lakes = {k: tmp_path / f"lake_{k}" for k in ("one", "chunked")}
        raw_one, raw_chunked = (_objects(lakes[k], "raw") for k in lakes)
        assert len(raw_one) > 100  # (days with rows of the daily tables)
        assert raw_one.keys() == raw_chunked.keys()
        for key, frame in raw_one.items():
            assert frame.equals(raw_chunked[key]), key
        star_one, star_chunked = (_objects(lakes[k], "star") for k in lakes)
        assert star_one.keys() == star_chunked.keys()
        for key, frame in star_one.items():
            assert frame.equals(star_chunked[key]), key
        wh_one, wh_chunked = _warehouse(one["warehouse"].url), _warehouse(chunked["warehouse"].url)
        assert all(len(wh_one[t]) > BULK_MIN_ROWS for t in ("fact_sales_order", "fact_payment"))
        assert wh_one == wh_chunked
        # each fact day got its own materialisation, with the same metadata either way
        for fact in ("fact_sales_order", "fact_purchase_order", "fact_payment"):
            by_run = [fact_materializations(facts[k], fact) for k in (WHOLE, CHUNKED)]
            assert [m.partition for m in by_run[0]] == [m.partition for m in by_run[1]]
            assert len(by_run[0]) == 48
            for key in ("rows_loaded", "rows_inserted", "dagster/row_count"):
                assert by_run[0][0].metadata[key] == by_run[1][0].metadata[key], (fact, key)

    assert len(wh_one["fact_deletions"]) == 1  # the deleted payment
    loads = one["instance"].get_latest_materialization_event(dg.AssetKey("dim_transaction"))
    assert loads.asset_materialization.metadata["load_mode"].value == "incremental"
