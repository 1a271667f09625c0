"""Per-day fingerprints of what each raw table's days captured (row count and an order-independent
hash), kept in one object per table so the change detector can compare them with the source's."""

from __future__ import annotations

import io
import random
import time
from dataclasses import dataclass

import polars as pl

from totesys_assets.resources.lake.codec import capture_time, frame_to_parquet
from totesys_assets.resources.lake.errors import LakeConflict, LakeError
from totesys_assets.resources.lake.store import WRITE_ATTEMPTS, LakeStore

# Per-day fingerprints of what each raw table's days captured (`record_fingerprints`).
FINGERPRINTS_PREFIX = "fingerprints"
FINGERPRINT_SCHEMA = pl.Schema(
    {
        "day": pl.String(),
        "rows": pl.Int64(),
        "hash": pl.String(),
        "data_version": pl.String(),
        "recorded_at": pl.Datetime("ms"),
    }
)


@dataclass(frozen=True)
class Fingerprint:
    """A day of a source table: row count and order-independent sum of row hashes (the data
    version its raw partition was materialised with, once recorded)."""

    rows: int
    hash: str
    data_version: str = ""

    def same_rows(self, other: Fingerprint | None) -> bool:
        other = other or EMPTY_FINGERPRINT
        return (self.rows, self.hash) == (other.rows, other.hash)


EMPTY_FINGERPRINT = Fingerprint(0, "0")


def _fingerprints_of(frame: pl.DataFrame) -> dict[str, Fingerprint]:
    return {
        r["day"]: Fingerprint(r["rows"], r["hash"], r["data_version"] or "")
        for r in frame.iter_rows(named=True)
    }


def fingerprints_key(lake: LakeStore, table: str) -> str:
    return lake.key(FINGERPRINTS_PREFIX, f"{table}.parquet")


def read_fingerprints(lake: LakeStore, table: str) -> dict[str, Fingerprint]:
    """day -> the source fingerprint of that day when the lake last captured it."""
    found = lake.get_object(fingerprints_key(lake, table))
    return {} if found is None else _fingerprints_of(pl.read_parquet(io.BytesIO(found.data)))


def record_fingerprints(lake: LakeStore, table: str, recorded: dict[str, Fingerprint]) -> None:
    """Record days' fingerprints (read-merge-compare-and-swap, like a raw day)."""
    if not recorded:
        return
    key = fingerprints_key(lake, table)
    now = capture_time()
    update = pl.DataFrame(
        [
            {"day": d, "rows": f.rows, "hash": f.hash, "data_version": f.data_version, "recorded_at": now}
            for d, f in sorted(recorded.items())
        ],
        schema=FINGERPRINT_SCHEMA,
    )
    for attempt in range(WRITE_ATTEMPTS):
        found = lake.get_object(key)
        old = pl.read_parquet(io.BytesIO(found.data)) if found else pl.DataFrame(schema=FINGERPRINT_SCHEMA)
        merged = pl.concat([old.join(update.select("day"), on="day", how="anti"), update]).sort("day")
        try:
            lake.put(
                key,
                frame_to_parquet(merged),
                if_match=found.etag if found else None,
                if_absent=found is None,
            )
            return
        except LakeConflict:
            time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
    raise LakeError(f"writing {lake.uri(key)} failed: another writer replaced it {WRITE_ATTEMPTS} times")
