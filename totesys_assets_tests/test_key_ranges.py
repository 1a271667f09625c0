"""Large dimensions a key range at a time: regrouping versions by key range and merging a stored
current state with new rows give what the whole-table operations give."""

from __future__ import annotations

import random

import polars as pl
import pytest

from totesys_assets.spooling import Regrouped
from totesys_assets.star.key_ranges import by_key_range, merge_by_key, parquet_batches, write_parquet


def _versions(seed: int, keys: int, rows: int) -> pl.DataFrame:
    rng = random.Random(seed)
    return pl.DataFrame(
        {"id": [rng.randrange(keys) for _ in range(rows)], "v": [rng.random() for _ in range(rows)]},
        schema={"id": pl.Int32, "v": pl.Float64},
    )


def test_by_key_range_puts_every_version_of_a_key_in_one_frame_in_key_order(tmp_path):
    chunks = [_versions(seed, 1000, 400) for seed in range(5)]  # versions of a key in several chunks
    ranges = list(by_key_range(chunks, "id", 128, tmp_path))
    assert len(ranges) == 8
    for a, b in zip(ranges, ranges[1:], strict=False):
        assert a["id"].max() < b["id"].min()
        assert a["id"].max() // 128 == a["id"].min() // 128
    everything = pl.concat(chunks)
    regrouped = pl.concat(ranges)
    assert regrouped.sort("id", "v").equals(everything.sort("id", "v"))
    assert not list(tmp_path.rglob("*.parquet"))  # the spool is emptied as the ranges are read
    (alone,) = by_key_range(chunks[:1], "id", 128, tmp_path)  # one frame holds all its versions
    assert alone is chunks[0]


@pytest.mark.parametrize("case", ["interleaved", "no_old", "no_new", "new_beyond_old", "old_beyond_new"])
def test_merge_by_key_is_the_anti_join_union_sorted(case, tmp_path):
    old = _versions(1, 5000, 3000).unique("id").sort("id")
    new = _versions(2, 5000, 800).unique("id").sort("id").with_columns(v=pl.lit(-1.0))
    if case == "no_old":
        old = old.clear()
    elif case == "no_new":
        new = new.clear()
    elif case == "new_beyond_old":
        new = new.with_columns(pl.col("id") + 10_000)
    elif case == "old_beyond_new":
        old = old.with_columns(pl.col("id") + 10_000)
    new_ranges = [part for _, part in sorted(new.with_columns(r=pl.col("id") // 700).group_by("r"))]
    new_ranges = [p.drop("r").sort("id") for p in new_ranges]
    path = tmp_path / "old.parquet"
    write_parquet([old], path, old.schema)
    batches = parquet_batches(path.read_bytes(), rows=250)
    merged = pl.concat([*merge_by_key(batches, new_ranges, "id"), old.clear()])
    expected = pl.concat([old.join(new, on="id", how="anti"), new]).sort("id")
    assert merged.equals(expected)
    assert list(parquet_batches(None)) == []


def test_regrouped_rows_leave_by_group_in_the_order_they_came(tmp_path):
    spool = Regrouped(tmp_path, pl.col("day"))
    batches = [
        pl.DataFrame({"day": ["b", "a", "c", "a"], "n": [1, 2, 3, 4]}),
        pl.DataFrame({"day": ["a", "d"], "n": [5, 6]}),
    ]
    for batch in batches:
        spool.add(batch, keep={"a", "b", "c"})  # "d" is not kept
    assert spool.groups() == ["a", "b", "c"]
    assert spool.take(["a", "b"]).rows() == [("b", 1), ("a", 2), ("a", 4), ("a", 5)]  # type: ignore[union-attr]
    assert spool.take(["a", "d"]) is None  # taken already / never kept
    assert spool.take(["c"]).rows() == [("c", 3)]  # type: ignore[union-attr]
    assert not list(tmp_path.iterdir())
