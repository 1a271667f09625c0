"""How the lake encodes a raw day: Parquet of the table's columns followed by the capture
metadata of every row version (README, "How the lake captures changes")."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import polars as pl

from totesys_assets.resources.lake.errors import LakeError
from totesys_assets.specs import TableSpec

# Capture metadata stored beside the source columns of every raw row version (README, "How the
# lake captures changes"): the source's hash of the row's content (a version is primary key +
# last_updated + this hash), when the lake first captured it, and whether it is a tombstone (the
# row was observed gone from the source at `_captured_at`; its other columns are its last version).
ROW_HASH, CAPTURED_AT, DELETED = "_row_hash", "_captured_at", "_deleted"
META_SCHEMA = pl.Schema({ROW_HASH: pl.Int64(), CAPTURED_AT: pl.Datetime("ms"), DELETED: pl.Boolean()})
# Objects written before the capture metadata existed read as captured at the epoch, not deleted,
# with row hash 0 (the warehouse migration gives their fact rows the same values).
LEGACY_CAPTURED_AT = datetime(1970, 1, 1)


def lake_schema(spec: TableSpec) -> pl.Schema:
    """The schema of a raw day object: the table's columns, then the capture metadata."""
    return pl.Schema({**spec.polars_schema, **META_SCHEMA})


def lake_empty_frame(spec: TableSpec) -> pl.DataFrame:
    return pl.DataFrame(schema=lake_schema(spec))


def with_capture_meta(spec: TableSpec, frame: pl.DataFrame, captured_at: datetime) -> pl.DataFrame:
    """An extract (or any frame of the table's rows) with the capture metadata of a new capture.

    A frame without the source's row hash (not from `TotesysSource.extract`) is hashed here.
    """
    exprs = []
    if ROW_HASH not in frame.columns:
        hashed = frame.select(spec.column_names).hash_rows(seed=0).reinterpret(signed=True)
        exprs.append(pl.lit(hashed).alias(ROW_HASH))
    if CAPTURED_AT not in frame.columns:
        exprs.append(pl.lit(captured_at, dtype=META_SCHEMA[CAPTURED_AT]).alias(CAPTURED_AT))
    if DELETED not in frame.columns:
        exprs.append(pl.lit(False).alias(DELETED))
    out = frame.with_columns(exprs) if exprs else frame
    return out.select(pl.col(c).cast(t) for c, t in lake_schema(spec).items())


def _legacy_meta(frame: pl.DataFrame, columns: list[str] | None) -> pl.DataFrame:
    """A frame read from an object without capture metadata, with the legacy values added."""
    legacy = {
        ROW_HASH: pl.lit(0, pl.Int64),
        CAPTURED_AT: pl.lit(LEGACY_CAPTURED_AT, pl.Datetime("ms")),
        DELETED: pl.lit(False),
    }
    wanted = [c for c in META_SCHEMA if columns is None or c in columns]
    out = frame.with_columns(legacy[c].alias(c) for c in wanted if c not in frame.columns)
    return out if columns is None else out.select(columns)


def frame_to_parquet(frame: pl.DataFrame) -> bytes:
    """A frame as a Parquet object (zstd level 1: nearly the default's size, encoded faster)."""
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", compression_level=1, statistics=True)
    return buf.getvalue()


def parquet_to_frame(
    data: bytes, spec: TableSpec | None = None, columns: list[str] | None = None
) -> pl.DataFrame:
    """Decode an object; with `spec`, a raw day in the lake schema (an object written before the
    capture metadata existed gets its legacy values) or a `LakeError` naming the table."""
    if spec is None:
        return pl.read_parquet(io.BytesIO(data), columns=columns)
    try:
        frame = pl.read_parquet(io.BytesIO(data), columns=columns)
    except pl.exceptions.ColumnNotFoundError:
        present = [c for c in columns or [] if c not in META_SCHEMA]
        frame = pl.read_parquet(io.BytesIO(data), columns=present)
    if any(c not in frame.columns for c in META_SCHEMA if columns is None or c in columns):
        frame = _legacy_meta(frame, columns)
    schema = lake_schema(spec)
    expected = schema if columns is None else pl.Schema({c: schema[c] for c in columns})
    if frame.schema != expected:
        raise LakeError(
            f"lake object for {spec.name!r} has schema {dict(frame.schema)}, expected {dict(expected)}"
        )
    return frame


def capture_time() -> datetime:
    """Now, as the lake stores capture times (UTC, naive, milliseconds)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
