"""Bad input fails the run with a clear message and leaves what the lake already holds intact."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_aws.s3 import S3Resource

from totesys_assets.raw.assets import raw_asset_key, raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.lake import LakeError, LakeResource, RawLakeIOManager
from totesys_assets.resources.source import TotesysSource
from totesys_assets_tests.helpers import failure_text, materialize_range, s3_objects


def _only(table: str) -> dict:
    """materialize() arguments selecting one table's raw asset (the others share its step)."""
    return {"assets": raw_assets, "selection": [raw_asset_key(table)]}


@pytest.fixture
def source(pg) -> str:
    url, sim = pg.new_source("bad_src", seed=3, days=4)
    return url


def _days_with_orders(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT DISTINCT last_updated::date FROM sales_order ORDER BY 1").fetchall()
    return [r[0].isoformat() for r in rows]


def test_unreachable_source_names_the_source_and_hides_the_password(tmp_path):
    url = f"postgresql://totes:hunter2secret@/totesys?host={tmp_path}/nowhere"
    lake = LakeResource(url=str(tmp_path / "lake"), s3=S3Resource())
    result = dg.materialize(
        **_only("staff"),
        resources={
            "source": TotesysSource(url=url),
            "lake": lake,
            "raw_io_manager": RawLakeIOManager(lake=lake),
        },
        partition_key="2024-01-02",
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    assert "cannot connect to the totesys source" in message
    assert "hunter2secret" not in message
    assert "totes:***@" in message
    assert not (tmp_path / "lake").exists()


def test_missing_table_is_named(source, tmp_path, monkeypatch):
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute('ALTER TABLE "design" RENAME TO design_old')
    result = dg.materialize(
        **_only("design"), resources=build_resources(), partition_key="2024-01-02", raise_on_error=False
    )
    assert not result.success
    assert "source table 'design' does not exist" in failure_text(result)


def test_changed_column_type_is_named_and_the_lake_keeps_its_objects(source, s3, monkeypatch):
    bucket = s3.new_bucket()
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    monkeypatch.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/totes")
    days = _days_with_orders(source)
    assert materialize_range(
        resources=build_resources(), start=days[0], end=days[-1], **_only("sales_order")
    ).success
    before = s3_objects(s3.client, bucket, "totes/raw/sales_order/")
    assert len(before) == len(days)

    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("ALTER TABLE sales_order ALTER COLUMN units_sold TYPE text")
    result = materialize_range(
        resources=build_resources(), start=days[0], end=days[-1], raise_on_error=False, **_only("sales_order")
    )
    assert not result.success
    message = failure_text(result)
    assert "sales_order.units_sold" in message and "'text'" in message and "'integer'" in message

    after = s3_objects(s3.client, bucket, "totes/raw/sales_order/")
    assert after.keys() == before.keys()
    assert all(after[k].equals(before[k]) for k in before)


class FailingPutLake(LakeResource):
    """Injected fault: S3 accepts the write of `ok_key` and fails every other one.

    A network or permission failure in the middle of a multi-day write cannot be produced on
    demand against moto, so this one fault is injected; everything else is the real S3 server.
    (Keyed rather than counted: the days of a range are written on several threads.)
    """

    ok_key: str

    def put(self, key: str, data: bytes, **conditions) -> None:
        if key != self.ok_key:
            raise LakeError(f"writing {self.uri(key)} failed: injected S3 PutObject failure")
        super().put(key, data, **conditions)


def test_s3_write_failure_fails_the_run_and_leaves_earlier_objects_intact(source, s3, monkeypatch):
    bucket = s3.new_bucket()
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    lake_url = f"s3://{bucket}/totes"
    days = _days_with_orders(source)
    good = LakeResource(url=lake_url, s3=S3Resource())
    res = {"source": TotesysSource(url=source), "lake": good, "raw_io_manager": RawLakeIOManager(lake=good)}
    assert dg.materialize(**_only("sales_order"), resources=res, partition_key=days[0]).success
    before = s3_objects(s3.client, bucket, "totes/raw/sales_order/")

    # The source changes on the first day, then a range write fails on every other day.
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 5, last_updated = last_updated + interval '1 second' "
            "WHERE last_updated::date = %s::date",
            (days[0],),
        )
    flaky = FailingPutLake(url=lake_url, s3=S3Resource(), ok_key=f"raw/sales_order/{days[0]}.parquet")
    res = {"source": TotesysSource(url=source), "lake": flaky, "raw_io_manager": RawLakeIOManager(lake=flaky)}
    result = materialize_range(
        resources=res, start=days[0], end=days[-1], raise_on_error=False, **_only("sales_order")
    )
    assert not result.success
    assert "injected S3 PutObject failure" in failure_text(result)

    after = s3_objects(s3.client, bucket, "totes/raw/sales_order/")
    first_key = f"totes/raw/sales_order/{days[0]}.parquet"
    # The first day's object was rewritten as one whole object holding old and new versions.
    old = before[first_key]
    assert after[first_key].height == 2 * old.height
    assert after[first_key].join(old, on=list(old.columns), how="semi").height == old.height
    # No other object was written halfway: every key present is a complete Parquet object.
    assert set(after) == {first_key}


def test_local_lake_write_is_atomic(tmp_path, monkeypatch):
    lake = LakeResource(url=str(tmp_path / "lake"), s3=S3Resource())
    lake.put("raw/staff/2024-01-01.parquet", b"old")

    def crash(src, dst):
        raise OSError("disk full (injected: a crash between write and rename cannot be produced for real)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.put("raw/staff/2024-01-01.parquet", b"new")
    folder = Path(tmp_path / "lake/raw/staff")
    assert (folder / "2024-01-01.parquet").read_bytes() == b"old"
    assert [p.name for p in folder.iterdir()] == ["2024-01-01.parquet"]
