"""Row versions of a raw day: merging an extract into a day (new versions and tombstones, nothing
stored ever dropped), the latest captured state of each key, and splitting an extract into days."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from totesys_assets.resources.lake.codec import (
    CAPTURED_AT,
    DELETED,
    META_SCHEMA,
    ROW_HASH,
    capture_time,
    frame_to_parquet,
    with_capture_meta,
)
from totesys_assets.resources.lake.errors import LakeError
from totesys_assets.resources.lake.fingerprints import Fingerprint
from totesys_assets.specs import LAST_UPDATED, TableSpec


@dataclass(frozen=True)
class RawDay:
    """A raw day object as read: its row versions and the tag it was read at."""

    frame: pl.DataFrame
    etag: str


def merge_day(
    spec: TableSpec,
    existing: pl.DataFrame | None,
    new: pl.DataFrame,
    gone: Iterable[int],
    captured_at: datetime,
) -> tuple[pl.DataFrame | None, int]:
    """A day's object after capturing an extract of it: (the new object, or None when nothing
    changed; how many versions and tombstones were added).

    A row of the extract is a new version when the day holds no version of its key, or the day's
    latest captured state of that key (by capture time, then last_updated) has another content hash
    or is a tombstone. A key in `gone` whose latest state in the day is a live version gets a
    tombstone. Nothing stored is ever dropped or changed.
    """
    pk = spec.primary_key
    new = with_capture_meta(spec, new, captured_at)
    if new[pk].n_unique() != new.height:  # only a caller's concatenation repeats a key
        new = new.unique(subset=[pk], keep="last", maintain_order=True)
    if existing is None or existing.is_empty():
        if new.is_empty():
            return None, 0
        return new.sort(raw_order(spec)), new.height
    latest = latest_captured(spec, existing)
    state = latest.select(pk, pl.col(ROW_HASH).alias("__hash"), pl.col(DELETED).alias("__deleted"))
    fresh = (
        new.join(state, on=pk, how="left")
        .filter(pl.col("__hash").is_null() | pl.col("__deleted") | (pl.col("__hash") != pl.col(ROW_HASH)))
        .drop("__hash", "__deleted")
    )
    gone_ids = pl.Series(pk, list(gone), dtype=spec.polars_schema[pk])
    tombstones = (
        latest.filter(pl.col(pk).is_in(gone_ids.implode()) & ~pl.col(DELETED))
        .join(new.select(pk), on=pk, how="anti")
        .with_columns(
            pl.lit(True).alias(DELETED),
            pl.lit(captured_at, dtype=META_SCHEMA[CAPTURED_AT]).alias(CAPTURED_AT),
        )
    )
    added = fresh.height + tombstones.height
    if not added:
        return None, 0
    merged = pl.concat([existing, fresh, tombstones], how="vertical").sort(raw_order(spec))
    return merged, added


def latest_captured(spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The latest captured state of each key in lake rows: by capture time, then last_updated
    (a tombstone is captured after the version it ends)."""
    pk = spec.primary_key
    return frame.sort([pk, CAPTURED_AT, LAST_UPDATED.name]).unique(
        subset=[pk], keep="last", maintain_order=True
    )


def raw_order(spec: TableSpec) -> list[str]:
    """The row order of a raw day object: oldest version first, then by primary key, then in
    capture order."""
    return [LAST_UPDATED.name, spec.primary_key, CAPTURED_AT]


class RawDays(dict[str, pl.DataFrame]):
    """A raw asset's output: day -> that day's extracted rows (lake schema, capture metadata set).

    Beside the frames, what the step learnt about them: `encoded` holds, for days not yet in the
    lake, the object `merge_day` would write, encoded by the step's workers ahead of the IO
    manager (bytes, or a file in the spool); `unchanged` the days whose source fingerprint equals
    the one the lake recorded (not rewritten, and absent from a chunked extract); `gone` the keys
    of each day observed absent from the source (tombstones); `existing` day objects the step
    already read; `fingerprints` what to record once stored. A long range is extracted a chunk at
    a time into `spool` (one Parquet file per day, `spool_days`), so only a chunk is in memory.
    """

    def __init__(
        self,
        by_day: dict[str, pl.DataFrame],
        encoded: Mapping[str, bytes | Path] | None = None,
        *,
        unchanged: Iterable[str] = (),
        gone: dict[str, list[int]] | None = None,
        existing: dict[str, RawDay] | None = None,
        fingerprints: dict[str, Fingerprint] | None = None,
        captured_at: datetime | None = None,
    ):
        super().__init__(by_day)
        self.encoded: dict[str, bytes | Path] = dict(encoded or {})
        self.unchanged: set[str] = set(unchanged)
        self.gone: dict[str, list[int]] = dict(gone or {})
        self.existing: dict[str, RawDay] = dict(existing or {})
        self.fingerprints: dict[str, Fingerprint] = dict(fingerprints or {})
        self.captured_at = captured_at or capture_time()
        self.spooled: dict[str, Path] = {}
        self.rows: dict[str, int] = {d: f.height for d, f in by_day.items()}
        self._spool: tempfile.TemporaryDirectory | None = None

    def spool_days(self, days: RawDays) -> None:
        """Move a chunk's days to files (their encoded objects as they are), keeping in memory
        only the empty ones."""
        if self._spool is None:
            self._spool = tempfile.TemporaryDirectory(prefix="totesys-raw-")
        folder = Path(self._spool.name)
        for day, frame in days.items():
            self.rows[day] = frame.height
            if not frame.height:
                self[day] = frame
                continue
            path = folder / f"{day}.parquet"
            encoded = days.encoded.get(day)
            path.write_bytes(encoded if isinstance(encoded, bytes) else frame_to_parquet(frame))
            self.spooled[day] = path
            if encoded is not None:
                self.encoded[day] = path

    def held(self) -> set[str]:
        """The days whose rows this output holds, in memory or spooled."""
        return set(self) | set(self.spooled)

    def frame(self, day: str) -> pl.DataFrame:
        """A day's extracted rows, read back from the spool if they were spooled."""
        if day in self.spooled:
            return pl.read_parquet(self.spooled[day])
        return self[day]

    def close(self) -> None:
        """Remove the spool (once the IO manager stored the days)."""
        if self._spool is not None:
            self._spool.cleanup()
            self._spool = None


def split_raw_days(
    spec: TableSpec,
    frame: pl.DataFrame,
    days: Iterable[str],
    encode_days: Iterable[str] = (),
    *,
    captured_at: datetime | None = None,
    open_start: bool = False,
    open_end: bool = False,
) -> RawDays:
    """Split an extract into its days (`split_by_day`) with the capture metadata, encoding the
    `encode_days` that hold rows as new day objects.

    The extract is sorted once (the order of a day object) and split in order, so each day comes
    out sorted; the bytes are those `merge_day` writes for a day the lake does not hold.
    """
    captured_at = captured_at or capture_time()
    frame = with_capture_meta(spec, frame, captured_at)
    unique = frame[spec.primary_key].n_unique() == frame.height
    by_day = split_by_day(
        frame.sort(raw_order(spec)) if unique else frame, days, open_start=open_start, open_end=open_end
    )
    encode = set(encode_days) if unique else set()
    encoded = {day: frame_to_parquet(part) for day, part in by_day.items() if day in encode and part.height}
    return RawDays(by_day, encoded, captured_at=captured_at)


def day_of(column: str, first: str | None = None, last: str | None = None) -> pl.Expr:
    """The partition day (YYYY-MM-DD) of a timestamp column; before `first` is `first`'s, after
    `last` is `last`'s (the first and the current partition hold what lies outside the range)."""
    day = pl.col(column).dt.strftime("%Y-%m-%d")
    if first is not None:
        day = pl.when(day < first).then(pl.lit(first)).otherwise(day)
    if last is not None:
        day = pl.when(day > last).then(pl.lit(last)).otherwise(day)
    return day


def split_by_day(
    frame: pl.DataFrame, days: Iterable[str], *, open_start: bool = False, open_end: bool = False
) -> dict[str, pl.DataFrame]:
    """Split an extract into one frame per partition day (by the date of last_updated).

    `open_start` / `open_end`: the run includes the first / the current partition, which also
    hold the rows dated before / after the partitions' range.
    """
    days = sorted(days)
    if frame.is_empty():
        return {d: frame.clear() for d in days}
    day_col = day_of(
        LAST_UPDATED.name, days[0] if open_start else None, days[-1] if open_end else None
    ).alias("__day")
    parts = frame.with_columns(day_col).partition_by("__day", as_dict=True, include_key=False)
    by_day = {k[0]: v for k, v in parts.items()}
    unexpected = set(by_day) - set(days)
    if unexpected:
        raise LakeError(f"extract holds rows for days outside the requested partitions: {sorted(unexpected)}")
    return {d: by_day.get(d, frame.clear()) for d in days}
