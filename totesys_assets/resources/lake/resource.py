"""The lake resource: the object store plus the raw tables' day objects and their fingerprints.

Writers of the same raw day cannot clobber each other: a day is read with its ETag, merged, and
written back only if it is still the object that was read; a writer that lost re-reads the day,
merges again and retries, so every version of every writer ends up in the day (`write_raw_day`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import polars as pl

from totesys_assets.partitions import day_chunks
from totesys_assets.resources.lake import fingerprints
from totesys_assets.resources.lake.codec import (
    capture_time,
    frame_to_parquet,
    lake_empty_frame,
    parquet_to_frame,
)
from totesys_assets.resources.lake.errors import LakeConflict, LakeError
from totesys_assets.resources.lake.fingerprints import Fingerprint
from totesys_assets.resources.lake.store import READ_THREADS, WRITE_ATTEMPTS, LakeStore
from totesys_assets.resources.lake.versions import RawDay, merge_day
from totesys_assets.specs import SOURCE_TABLES


class LakeResource(LakeStore):
    """Where the lake lives: `s3://bucket/prefix` or a local folder (TOTESYS_LAKE_URL)."""

    # --- raw tables -----------------------------------------------------------------------------
    def raw_days(self, table: str) -> list[str]:
        """The days for which the lake holds an object of a raw table."""
        return [
            k.rsplit("/", 1)[1].removesuffix(".parquet") for k in self.list_keys(self.key("raw", table, ""))
        ]

    def read_raw(
        self, table: str, days: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """Every stored row version of a raw table (all days, or the given days), one frame."""
        present = set(self.raw_days(table))
        wanted = present if days is None else present.intersection(days)
        return self._read_raw_keys(table, [self.raw_key(table, d) for d in sorted(wanted)], columns)

    def read_raw_chunks(
        self, table: str, chunks: Iterable[list[str]], columns: list[str] | None = None
    ) -> Iterator[pl.DataFrame]:
        """`read_raw` of each chunk of days in turn (the lake is listed once), one frame each."""
        present = set(self.raw_days(table))
        for days in chunks:
            keys = [self.raw_key(table, d) for d in sorted(present.intersection(days))]
            yield self._read_raw_keys(table, keys, columns)

    def raw_chunks(self, table: str, days: Iterable[str]) -> list[list[str]]:
        """The days in consecutive chunks of at most TOTESYS_CHUNK_ROWS rows (`day_chunks`), by the
        rows the lake recorded for each day."""
        recorded = self.read_fingerprints(table)
        return day_chunks(sorted(days), {d: fp.rows for d, fp in recorded.items()})

    def read_raw_change_chunks(
        self, table: str, since: datetime | None, columns: list[str] | None = None
    ) -> tuple[Iterator[pl.DataFrame], datetime | None]:
        """`read_raw_changes` a chunk of day objects at a time (oldest days first, `raw_chunks`):
        the frames, and the watermark for the next call."""
        changed, watermark = self._changed_since(table, since)
        by_day = {k.rsplit("/", 1)[1].removesuffix(".parquet"): k for k in changed}
        chunks = self.raw_chunks(table, by_day)
        return (self._read_raw_keys(table, [by_day[d] for d in days], columns) for days in chunks), watermark

    def read_raw_changes(
        self, table: str, since: datetime | None, columns: list[str] | None = None
    ) -> tuple[pl.DataFrame, datetime | None]:
        """Row versions in the day objects written at or after `since` (all when None), optionally
        only some columns.

        Returns the frame and the newest last-modified time seen: the watermark for the next
        call. `>=` because object stores keep whole-second times; re-reading is harmless.
        """
        changed, watermark = self._changed_since(table, since)
        return self._read_raw_keys(table, changed, columns), watermark

    def _changed_since(self, table: str, since: datetime | None) -> tuple[list[str], datetime | None]:
        """The keys of a raw table's day objects written at or after `since` (all when None),
        oldest day first, and the newest last-modified time of all of them."""
        objects = self.list_objects(self.key("raw", table, ""))
        changed = sorted(k for k, modified in objects.items() if since is None or modified >= since)
        return changed, max(objects.values(), default=since)

    def _read_raw_keys(self, table: str, keys: list[str], columns: list[str] | None = None) -> pl.DataFrame:
        spec = SOURCE_TABLES[table]
        if keys and not self.is_s3:
            together = self._read_local_together(keys, spec, columns)
            if together is not None:
                return together
        frames = [f for f in self.get_frames(keys, spec, columns).values() if f is not None]
        if frames:
            return pl.concat(frames, how="vertical")
        empty = lake_empty_frame(spec)
        return empty if columns is None else empty.select(columns)

    def read_raw_day(self, table: str, day: str) -> RawDay | None:
        """A raw day object with the etag it was read at (None when the lake has no such day)."""
        found = self.get_object(self.raw_key(table, day))
        if found is None:
            return None
        return RawDay(parquet_to_frame(found.data, SOURCE_TABLES[table]), found.etag)

    def read_raw_days(self, table: str, days: Iterable[str]) -> dict[str, RawDay]:
        """The given days' objects that exist, read on a few threads (see `get_frames`)."""
        days = list(days)
        if len(days) <= 1:
            found = {d: self.read_raw_day(table, d) for d in days}
        else:
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(days))) as pool:
                found = dict(zip(days, pool.map(lambda d: self.read_raw_day(table, d), days), strict=True))
        return {d: obj for d, obj in found.items() if obj is not None}

    def write_raw_day(
        self,
        table: str,
        day: str,
        new: pl.DataFrame,
        existing: RawDay | None,
        *,
        gone: Iterable[int] = (),
        captured_at: datetime | None = None,
    ) -> int:
        """Merge an extract of a day into its object; returns how many versions and tombstones
        were added (`merge_day`).

        `gone` are primary keys observed absent from the source (each gets a tombstone if the day
        holds it, live). `existing` is the day as the caller read it (None: no object); the write
        only replaces that very object (or creates the day only if it still does not exist). If
        another writer stored the day in between, the day is read again and merged again, so the
        versions of both are kept.
        """
        key = self.raw_key(table, day)
        spec = SOURCE_TABLES[table]
        captured_at = captured_at or capture_time()
        gone = list(gone)
        for attempt in range(WRITE_ATTEMPTS):
            merged, added = merge_day(
                spec, None if existing is None else existing.frame, new, gone, captured_at
            )
            if merged is None:
                return 0
            try:
                self.put(
                    key,
                    frame_to_parquet(merged),
                    if_match=None if existing is None else existing.etag,
                    if_absent=existing is None,
                )
                return added
            except LakeConflict:
                existing = self.read_raw_day(table, day)
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise LakeError(
            f"writing {self.uri(key)} failed: another writer replaced it {WRITE_ATTEMPTS} times "
            "while this run merged its versions; nothing of this run was stored for the day"
        )

    # --- per-day fingerprints of what the raw days captured -------------------------------------
    def read_fingerprints(self, table: str) -> dict[str, Fingerprint]:
        """day -> the source fingerprint of that day when the lake last captured it."""
        return fingerprints.read_fingerprints(self, table)

    def record_fingerprints(self, table: str, recorded: dict[str, Fingerprint]) -> None:
        """Record days' fingerprints (read-merge-compare-and-swap, like a raw day)."""
        fingerprints.record_fingerprints(self, table, recorded)
