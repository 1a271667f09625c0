"""Frames checked against a warehouse table's spec and cast to it before anything touches the
database, and their CSV for COPY (NULL is an unquoted empty field, an empty string is "")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from totesys_assets.resources.warehouse.errors import WarehouseLoadError, format_key
from totesys_assets.specs import Kind, TableSpec

# Rows per CSV chunk streamed into COPY (bounded memory; serialising overlaps with sending).
COPY_CHUNK_ROWS = 100_000
# Time literals keep microseconds; the time(3) columns round them as PostgreSQL does.
_TIME_FORMAT = "%H:%M:%S%.6f"


def prepare_frame(spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's load columns cast to the spec, exact duplicate rows removed.

    Raises `WarehouseLoadError` naming the table, column and value for a missing or unknown column,
    a value that does not fit the column's type, or one key with two different rows.
    """
    wanted = spec.insert_columns
    for name in frame.columns:
        if name not in wanted:
            why = "is assigned by the warehouse" if name in spec.column_names else "is not a column of it"
            raise WarehouseLoadError(
                f"warehouse table {spec.name!r}: column {name!r} in the frame {why}",
                table=spec.name,
                column=name,
            )
    for name in wanted:
        if name not in frame.columns:
            raise WarehouseLoadError(
                f"warehouse table {spec.name!r}: column {name!r} is missing from the frame",
                table=spec.name,
                column=name,
            )
    out = frame.select(_cast_column(spec, frame[name]) for name in wanted)
    key = list(spec.natural_key) if spec.is_fact else [spec.primary_key]
    if out.select(pl.struct(key).n_unique()).item() == out.height:
        return out
    out = out.unique(maintain_order=True)
    dupes = out.filter(pl.struct(key).is_duplicated())
    if dupes.height:
        first = dupes.row(0, named=True)
        value = {k: first[k] for k in key}
        raise WarehouseLoadError(
            f"warehouse table {spec.name!r}: the frame holds different rows for the same key "
            f"{format_key(value)}; nothing was loaded",
            table=spec.name,
            column=", ".join(key),
            value=value if len(key) > 1 else value[key[0]],
        )
    return out


class FrameChunks:
    """A load's frames, each checked and cast by `prepare_frame` only when the load reads it, so
    a load holds one chunk at a time; `peek` buffers the first ones (a load's strategy depends on
    its size). Chunks must not repeat a key another chunk holds; a fact's chunks come oldest first
    (its serial record ids follow that order).
    """

    def __init__(self, spec: TableSpec, frames: pl.DataFrame | Iterable[pl.DataFrame]):
        self._spec = spec
        self._source = iter([frames] if isinstance(frames, pl.DataFrame) else frames)
        self._buffer: list[pl.DataFrame] = []
        self.rows = 0  # rows of the chunks prepared so far
        self.started = False  # a chunk left the buffer: the stream cannot be read again
        self.last: pl.DataFrame | None = None  # the chunk read last (a load error names its rows)

    def _next(self) -> pl.DataFrame | None:
        for frame in self._source:
            chunk = prepare_frame(self._spec, frame)
            self.rows += chunk.height
            return chunk
        return None

    def peek(self, rows: int) -> int:
        """Prepare chunks until at least `rows` rows are buffered (or none is left); the rows buffered."""
        while sum(c.height for c in self._buffer) < rows and (chunk := self._next()) is not None:
            self._buffer.append(chunk)
        return sum(c.height for c in self._buffer)

    def __iter__(self) -> Iterator[pl.DataFrame]:
        if self.started:
            raise RuntimeError(f"the frames of a {self._spec.name} load were already read")
        self.started = True
        while True:
            chunk = self._buffer.pop(0) if self._buffer else self._next()
            if chunk is None:
                return
            self.last = chunk
            yield chunk

    @property
    def frame(self) -> pl.DataFrame:
        """The chunk read last, or an empty frame of the load's columns (for error messages)."""
        if self.last is not None:
            return self.last
        return pl.DataFrame(schema={c: self._spec.column(c).dtype for c in self._spec.insert_columns})


def _cast_column(spec: TableSpec, series: pl.Series) -> pl.Series:
    """`series` in its column's dtype; refuses lossy casts (overflow, money beyond 2 decimals, floats)."""
    col = spec.column(series.name)
    dtype = col.dtype

    def fail(value: Any, why: str) -> WarehouseLoadError:
        return WarehouseLoadError(
            f"warehouse table {spec.name!r}, column {col.name!r}: value {value!r} {why}; nothing was loaded",
            table=spec.name,
            column=col.name,
            value=value,
        )

    if series.dtype == dtype:
        if dtype == pl.String:
            with_nul = series.filter(series.str.contains("\x00", literal=True))
            if with_nul.len():
                raise fail(with_nul[0], "contains a NUL character, which PostgreSQL text cannot store")
        return series

    if col.kind is Kind.MONEY and series.dtype.is_float():
        bad = series.drop_nulls()
        raise fail(bad[0] if bad.len() else None, f"is a {series.dtype} (money must be an exact Decimal)")
    try:
        cast = series.cast(dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        try:
            lax = series.cast(dtype, strict=False)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            first = series.drop_nulls()
            raise fail(
                first[0] if first.len() else None,
                f"has dtype {series.dtype}, expected {dtype} ({col.pg_type})",
            ) from exc
        bad = series.filter(lax.is_null() & series.is_not_null())
        raise fail(bad[0] if bad.len() else None, f"does not fit {col.pg_type}") from exc
    if isinstance(series.dtype, pl.Decimal) and (series.dtype.scale or 0) > (dtype.scale or 0):  # type: ignore[attr-defined]
        lossy = series.filter(cast.cast(series.dtype) != series)
        if lossy.len():
            raise fail(lossy[0], f"has more decimals than {col.pg_type}")
    return cast


def csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    for chunk in frame.iter_slices(COPY_CHUNK_ROWS):
        yield chunk.write_csv(include_header=False, time_format=_TIME_FORMAT).encode()
