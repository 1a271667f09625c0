"""How the lake captures changes: versions by content, tombstones, and the per-day fingerprints
(docs/decisions.md, "Change capture by content and per-day fingerprints")."""

from __future__ import annotations

from datetime import datetime

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
