"""The raw layer against the real 2024-11-15 export in PostgreSQL and moto's S3 HTTP server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from datetime import date

import dagster as dg
import psycopg
import pytest

from totesys_assets.partitions import daily_partitions
from totesys_assets.raw.assets import ENCODE_AHEAD_MIN_DAYS, RAW_STEP, raw_asset_key, raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.lake import LakeResource, lake_schema
from totesys_assets.specs import SOURCE_TABLES
from totesys_assets_tests.helpers import frame_rows, raw_materializations, s3_objects, source_rows

FIRST_DAY, LAST_DAY = "2022-11-03", "2024-11-15"


@pytest.fixture
def lake_env(monkeypatch, s3):
    """Point the configuration contract at moto: TOTESYS_LAKE_URL=s3://bucket/prefix."""
    bucket = s3.new_bucket()
    monkeypatch.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/totes")
    return bucket


def _check_lake_equals_source(s3, bucket: str, source_url: str, first: str, last: str) -> dict[str, int]:
    """Per table and per day: the objects hold exactly the source rows of that day, typed as the spec."""
    counts = {}
    for table, spec in SOURCE_TABLES.items():
        objects = s3_objects(s3.client, bucket, f"totes/raw/{table}/")
        by_day = defaultdict(list)
        for row in source_rows(
            source_url, table, f"WHERE last_updated >= '{first}' AND last_updated < '{last}'::date + 1"
        ):
            by_day[row[spec.column_names.index("last_updated")].date().isoformat()].append(row)
        assert sorted(objects) == [f"totes/raw/{table}/{d}.parquet" for d in sorted(by_day)], table
        for key, frame in objects.items():
            day = key.rsplit("/", 1)[1].removesuffix(".parquet")
            assert frame.schema == lake_schema(spec), (table, day)  # the columns and capture metadata
            assert frame_rows(frame, table) == by_day[day], (table, day)
        counts[table] = sum(len(v) for v in by_day.values())
    return counts


@pytest.mark.reference
def test_single_run_range_backfill_puts_every_source_row_in_the_lake(real_export_lake, s3):
    result = real_export_lake.result
    assert result.success
    # One run, one step: the whole range is extracted by a single query per table.
    assert [e.step_key for e in result.get_step_success_events()] == [RAW_STEP]

    counts = _check_lake_equals_source(
        s3, real_export_lake.bucket, real_export_lake.source_url, FIRST_DAY, LAST_DAY
    )
    assert counts == {
        "address": 30, "counterparty": 20, "currency": 3, "department": 8, "design": 473,
        "payment": 15836, "payment_type": 4, "purchase_order": 4649, "sales_order": 11187,
        "staff": 20, "transaction": 15836,
    }  # fmt: skip
    staff = s3_objects(s3.client, real_export_lake.bucket, "totes/raw/staff/")[
        "totes/raw/staff/2022-11-03.parquet"
    ]
    assert staff.filter(staff["staff_id"] == 17)["last_name"].item() == "O'Keefe"

    mats = raw_materializations(result, "sales_order")
    assert {m.partition for m in mats} >= {"2024-11-15", "2022-11-03"}
    assert len(mats) == 744  # every day of the range, including days without rows
    # Each day carries its own row count; the run's totals are separate.
    per_day = {m.partition: m.metadata["dagster/row_count"].value for m in mats}
    assert sum(per_day.values()) == 11187
    assert per_day["2022-11-05"] == 0 and per_day["2024-11-15"] > 0
    assert mats[0].metadata["run_new_versions"].value == 11187


@pytest.mark.reference
@pytest.mark.slow
def test_headless_backfill_through_the_dagster_cli(real_export_lake, lake_env, s3, tmp_path):
    first, last = "2024-11-11", "2024-11-15"
    reference_source = real_export_lake.source_url
    env = {
        **os.environ,
        "TOTESYS_DB_URL": reference_source,
        "DAGSTER_HOME": str(tmp_path),
        "TOTESYS_HOME": str(tmp_path / "home"),
    }
    cmd = [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "totesys_assets.definitions",
        "--select", "group:raw", "--partition-range", f"{first}...{last}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the code location's executor: every step in the run's process, none spawned per step
    assert "Finished steps in process" in proc.stderr and "Multiprocess executor" not in proc.stderr
    counts = _check_lake_equals_source(s3, lake_env, reference_source, first, last)
    assert counts["sales_order"] > 50 and counts["address"] == 0


def _one_day_source(pg) -> str:
    url, sim = pg.new_source("src", seed=7, days=3)
    return url


def _latest_day(url: str, table: str) -> date:
    with psycopg.connect(url) as conn:
        return conn.execute(f'SELECT max(last_updated)::date FROM "{table}"').fetchone()[0]  # noqa: S608


def test_rematerialising_changes_nothing_and_updates_keep_every_version(pg, lake_env, s3, monkeypatch):
    url = _one_day_source(pg)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    day = _latest_day(url, "sales_order").isoformat()
    key = f"totes/raw/sales_order/{day}.parquet"
    only = {"assets": raw_assets, "selection": [raw_asset_key("sales_order")]}

    assert dg.materialize(**only, resources=build_resources(), partition_key=day).success
    first = s3.client.head_object(Bucket=lake_env, Key=key)
    before = s3_objects(s3.client, lake_env, key)[key]

    again = dg.materialize(**only, resources=build_resources(), partition_key=day)
    assert again.success
    assert [m.asset_key for m in again.get_asset_materialization_events()] == [raw_asset_key("sales_order")]
    assert raw_materializations(again, "sales_order")[0].metadata["run_new_versions"].value == 0
    assert s3.client.head_object(Bucket=lake_env, Key=key)["ETag"] == first["ETag"]

    # A row changes in place later that day: the partition gains a version and keeps the old one.
    order_id = before["sales_order_id"][0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 1, "
            "last_updated = date_trunc('day', last_updated) + interval '23 hours 59 minutes' "
            "WHERE sales_order_id = %s",
            (int(order_id),),
        )
    assert dg.materialize(**only, resources=build_resources(), partition_key=day).success
    after = s3_objects(s3.client, lake_env, key)[key]
    assert after.height == before.height + 1
    versions = after.filter(after["sales_order_id"] == order_id).sort("last_updated")
    assert versions.height == 2
    assert versions["units_sold"][1] == versions["units_sold"][0] + 1
    assert frame_rows(after.filter(after["sales_order_id"] != order_id), "sales_order") == frame_rows(
        before.filter(before["sales_order_id"] != order_id), "sales_order"
    )


def test_a_backfill_stores_the_days_its_workers_encoded_and_merges_days_the_lake_holds(
    pg, lake_env, s3, monkeypatch
):
    """A run of ENCODE_AHEAD_MIN_DAYS or more has its extraction workers encode the days the lake
    does not hold; the IO manager stores those bytes and merges (write_raw_day) only the rest."""
    url, _ = pg.new_source("src", seed=11, days=40)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    with psycopg.connect(url) as conn:
        first, last = conn.execute(
            "SELECT min(last_updated)::date, max(last_updated)::date FROM sales_order"
        ).fetchone()
    days = dg.PartitionKeyRange(first.isoformat(), last.isoformat())
    assert len(daily_partitions.get_partition_keys_in_range(days)) >= ENCODE_AHEAD_MIN_DAYS
    merged: list[str] = []
    write_raw_day = LakeResource.write_raw_day

    def counted(self, table, day, new, existing, **kwargs):
        if new.height:
            merged.append(day)
        return write_raw_day(self, table, day, new, existing, **kwargs)

    monkeypatch.setattr(LakeResource, "write_raw_day", counted)
    only = {"assets": raw_assets, "selection": [raw_asset_key("sales_order")]}
    tags = {"dagster/asset_partition_range_start": days.start, "dagster/asset_partition_range_end": days.end}
    assert dg.materialize(**only, resources=build_resources(), tags=tags).success
    assert merged == []  # every day with rows was stored as encoded
    objects = s3_objects(s3.client, lake_env, "totes/raw/sales_order/")
    assert len(objects) >= ENCODE_AHEAD_MIN_DAYS - 10  # weekends hold no orders
    etags = {k: s3.client.head_object(Bucket=lake_env, Key=k)["ETag"] for k in objects}

    # Again: every day's source fingerprint equals the one the lake recorded, so no day is merged
    # or rewritten.
    assert dg.materialize(**only, resources=build_resources(), tags=tags).success
    assert merged == []
    assert {k: s3.client.head_object(Bucket=lake_env, Key=k)["ETag"] for k in objects} == etags

    # Without the recorded fingerprints (a lake written before them) each day is merged, unchanged.
    s3.client.delete_object(Bucket=lake_env, Key="totes/fingerprints/sales_order.parquet")
    assert dg.materialize(**only, resources=build_resources(), tags=tags).success
    assert sorted(merged) == sorted(k.rsplit("/", 1)[1].removesuffix(".parquet") for k in objects)
    assert {k: s3.client.head_object(Bucket=lake_env, Key=k)["ETag"] for k in objects} == etags


def test_definitions_load_with_eleven_partitioned_raw_assets():
    from totesys_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    # Every job runs its steps in process (see EXECUTOR in definitions.py for the measurements).
    for job in (defs.resolve_implicit_global_asset_job_def(), defs.resolve_job_def("raw_refresh")):
        assert job.executor_def is dg.in_process_executor
    graph = defs.resolve_asset_graph()
    raw = [k for k in graph.get_all_asset_keys() if k.path[0] == "raw"]
    assert sorted(k.path[1] for k in raw) == sorted(SOURCE_TABLES)
    for key in raw:
        node = graph.get(key)
        assert node.partitions_def.get_first_partition_key() == FIRST_DAY
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
        assert node.group_name == "raw"
        schema = node.metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == SOURCE_TABLES[key.path[1]].column_names


def test_one_selected_table_extracts_only_that_table(pg, lake_env, s3, monkeypatch):
    """Selecting one raw asset (as the change sensor does) runs the shared step for it alone."""
    url = _one_day_source(pg)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    day = _latest_day(url, "staff").isoformat()
    result = dg.materialize(
        raw_assets, selection=[raw_asset_key("staff")], resources=build_resources(), partition_key=day
    )
    assert result.success
    assert {m.asset_key for m in result.get_asset_materialization_events()} == {raw_asset_key("staff")}
    written = {k.split("/")[2] for k in s3_objects(s3.client, lake_env, "totes/raw/")}
    assert written == {"staff"}
