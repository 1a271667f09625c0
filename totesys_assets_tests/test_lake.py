"""The lake's day objects on a local folder: merging new versions into a day, encoding new days
ahead of the IO manager, and reading many objects at once."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import polars as pl
import pytest
from dagster_aws.s3 import S3Resource

from totesys_assets.partitions import daily_partitions
from totesys_assets.resources.lake import (
    LakeError,
    LakeResource,
    RawDays,
    RawLakeIOManager,
    frame_to_parquet,
    split_raw_days,
)
from totesys_assets.specs import SOURCE_TABLES

SPEC = SOURCE_TABLES["currency"]


def _rows(*rows: tuple[int, str, datetime]) -> pl.DataFrame:
    created = datetime(2024, 1, 1)
    return pl.DataFrame(
        [
            {"currency_id": cid, "currency_code": code, "created_at": created, "last_updated": updated}
            for cid, code, updated in rows
        ],
        schema=SPEC.polars_schema,
    )


def test_a_day_keeps_each_version_once_and_the_last_copy_of_a_repeated_one(tmp_path):
    lake = LakeResource(url=str(tmp_path), s3=S3Resource())
    t1, t2 = datetime(2024, 1, 2, 9), datetime(2024, 1, 2, 10)
    # a frame in which one version repeats (two extracts concatenated): the later copy wins
    added = lake.write_raw_day(
        "currency", "2024-01-02", _rows((1, "GBP", t1), (2, "USD", t2), (1, "GBX", t1)), None
    )
    assert added == 2
    day = lake.read_raw("currency", ["2024-01-02"])
    assert day.select("currency_id", "currency_code").rows() == [(1, "GBX"), (2, "USD")]

    # a frame of distinct rows is stored as is, sorted by last_updated then key
    lake.write_raw_day("currency", "2024-01-03", _rows((3, "EUR", t2), (2, "USD", t1)), None)
    assert lake.read_raw("currency", ["2024-01-03"])["currency_id"].to_list() == [2, 3]

    # merging: only versions the day does not hold yet are added
    existing = lake.read_raw_day("currency", "2024-01-02")
    assert lake.write_raw_day("currency", "2024-01-02", _rows((2, "USD", t2)), existing) == 0
    assert (
        lake.write_raw_day(
            "currency", "2024-01-02", _rows((2, "USD", t2), (2, "USX", t2.replace(hour=11))), existing
        )
        == 1
    )
    assert lake.read_raw("currency", ["2024-01-02"]).height == 3


def _frame_of_days() -> pl.DataFrame:
    """Currency versions over two days, in no particular order."""
    return _rows(
        (3, "EUR", datetime(2024, 1, 3, 9)),
        (2, "USD", datetime(2024, 1, 2, 10)),
        (1, "GBP", datetime(2024, 1, 3, 8)),
        (4, "JPY", datetime(2024, 1, 2, 10)),
    )


def test_new_days_are_encoded_as_write_raw_day_would_store_them(tmp_path):
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    captured = datetime(2024, 1, 5, 12)
    split = split_raw_days(
        SPEC, _frame_of_days(), days, encode_days={"2024-01-02", "2024-01-04"}, captured_at=captured
    )
    # every day is there (an empty one too); only requested days holding rows are encoded
    assert list(split) == days and split["2024-01-04"].is_empty()
    assert set(split.encoded) == {"2024-01-02"}
    assert split["2024-01-03"]["currency_id"].to_list() == [1, 3]  # sorted: last_updated, then key

    lake = LakeResource(url=str(tmp_path), s3=S3Resource())
    lake.write_raw_day(
        "currency",
        "2024-01-02",
        _frame_of_days().filter(pl.col("currency_id").is_in([2, 4])),
        None,
        captured_at=captured,
    )
    assert split.encoded["2024-01-02"] == lake.get(lake.raw_key("currency", "2024-01-02"))

    # an extract whose key repeats is left to write_raw_day's de-duplication
    repeated = pl.concat([_frame_of_days(), _frame_of_days()])
    assert split_raw_days(SPEC, repeated, days, encode_days=days).encoded == {}


def _handle(lake: LakeResource, obj: RawDays, first: str, last: str) -> None:
    context = dg.build_output_context(
        asset_key=dg.AssetKey(["raw", "currency"]),
        asset_partitions_def=daily_partitions,
        asset_partition_key_range=dg.PartitionKeyRange(first, last),
    )
    RawLakeIOManager(lake=lake).handle_output(context, obj)


def test_encoded_days_are_stored_as_is_but_a_day_already_in_the_lake_is_merged(tmp_path):
    lake = LakeResource(url=str(tmp_path), s3=S3Resource())
    t1 = datetime(2024, 1, 2, 9)
    lake.write_raw_day("currency", "2024-01-02", _rows((9, "CHF", t1)), None)

    # encoded bytes stand for "the day as a new object": here both days claim to be new
    days = ["2024-01-02", "2024-01-03"]
    split = split_raw_days(SPEC, _frame_of_days(), days, encode_days=days)
    assert set(split.encoded) == set(days)
    _handle(lake, split, *days)

    # the new day is stored as encoded; the day the lake held keeps its version and gains the new
    assert lake.get(lake.raw_key("currency", "2024-01-03")) == split.encoded["2024-01-03"]
    assert sorted(lake.read_raw("currency", ["2024-01-02"])["currency_id"].to_list()) == [2, 4, 9]


def test_many_local_objects_are_read_together_and_a_bad_one_is_still_named(tmp_path, monkeypatch):
    lake = LakeResource(url=str(tmp_path), s3=S3Resource())
    frame = _frame_of_days()
    for day, part in split_raw_days(SPEC, frame, ["2024-01-02", "2024-01-03"]).items():
        lake.write_raw_day("currency", day, part, None)
    one_by_one = pl.concat(
        f for f in lake.get_frames(lake.list_keys("raw/currency/"), SPEC).values() if f is not None
    )

    # one Polars read of every object (no per-object reads), the same rows in the same order
    def no_per_object_reads(*args, **kwargs):
        raise AssertionError("read object by object")

    with monkeypatch.context() as m:
        m.setattr(LakeResource, "get_frames", no_per_object_reads)
        assert lake.read_raw("currency").equals(one_by_one)
        assert lake.read_raw("currency", columns=["currency_id"]).equals(one_by_one.select("currency_id"))

    # an object with another schema: the per-object read names the table and the types
    bad = frame.with_columns(pl.col("currency_id").cast(pl.Int64)).head(1)
    lake.put(lake.raw_key("currency", "2024-01-04"), frame_to_parquet(bad))
    with pytest.raises(LakeError, match="lake object for 'currency' has schema"):
        lake.read_raw("currency")
