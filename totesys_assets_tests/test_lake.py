"""The lake's day objects on a local folder: merging new versions into a day, and the encoding."""

from __future__ import annotations

from datetime import datetime

import polars as pl
from dagster_aws.s3 import S3Resource

from totesys_assets.resources.lake import LakeResource
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
    existing = lake.read_raw("currency", ["2024-01-02"])
    assert lake.write_raw_day("currency", "2024-01-02", _rows((2, "USD", t2)), existing) == 0
    assert (
        lake.write_raw_day(
            "currency", "2024-01-02", _rows((2, "USD", t2), (2, "USX", t2.replace(hour=11))), existing
        )
        == 1
    )
    assert lake.read_raw("currency", ["2024-01-02"]).height == 3
