"""Large dimensions a key range at a time: the raw versions of a table regrouped by key range
through local spool files, and a stored current state merged with new rows as sorted streams, so
a dimension's memory is bounded by a range of keys, not by the table."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from totesys_assets.spooling import Regrouped


def by_key_range(
    frames: Iterable[pl.DataFrame], key: str, width: int, folder: Path
) -> Iterator[pl.DataFrame]:
    """The rows of `frames` (any keys, e.g. a chunk of day objects each) regrouped into one frame
    per range of `width` keys, ranges in ascending order: every version of a key is in the one
    frame of its range. The frames are spooled in `folder` as they come; a single frame is passed
    on as it is (it holds every version of its keys)."""
    stream = iter(frames)
    first, second = next(stream, None), next(stream, None)
    if second is None:  # one frame holds every version of its keys already
        if first is not None:
            yield first
        return
    folder.mkdir(parents=True, exist_ok=True)
    spool = Regrouped(folder, pl.col(key) // width)
    for frame in itertools.chain([first, second], stream):
        spool.add(frame)  # type: ignore[arg-type]
    for number in spool.groups():
        yield spool.take([number])  # type: ignore[misc]


def merge_by_key(
    old: Iterable[pl.DataFrame], new: Iterable[pl.DataFrame], key: str
) -> Iterator[pl.DataFrame]:
    """Two streams of frames sorted by `key` as one sorted stream in which a key of `new` replaces
    that key's row in `old`; each frame of `new` is a range of keys after the previous one's."""
    pending = iter(old)
    buffer: pl.DataFrame | None = None
    exhausted = False
    for frame in new:
        if frame.is_empty():
            continue
        lo, hi = frame[key][0], frame[key][-1]
        while not exhausted and (buffer is None or buffer.is_empty() or buffer[key][-1] <= hi):
            batch = next(pending, None)
            if batch is None:
                exhausted = True
            else:
                buffer = batch if buffer is None else pl.concat([buffer, batch])
        if buffer is not None:
            before = buffer.filter(pl.col(key) < lo)
            if before.height:
                yield before
            inside = buffer.filter(pl.col(key).is_between(lo, hi)).join(frame.select(key), on=key, how="anti")
            buffer = buffer.filter(pl.col(key) > hi)
            yield pl.concat([inside, frame]).sort(key) if inside.height else frame
        else:
            yield frame
    if buffer is not None and buffer.height:
        yield buffer
    yield from pending


def spool(frames: Iterable[pl.DataFrame], folder: Path) -> Iterator[pl.DataFrame]:
    """Each frame, after writing it to `folder` (read back in order by `spooled`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, frame in zip(itertools.count(), frames, strict=False):
        frame.write_parquet(folder / f"{n:08d}.parquet", compression="lz4")
        yield frame


def spooled(folder: Path) -> Iterator[pl.DataFrame]:
    """The frames `spool` wrote, in order."""
    for file in sorted(folder.glob("*.parquet")) if folder.exists() else []:
        yield pl.read_parquet(file)


def parquet_batches(data: bytes | None, rows: int = 1_000_000) -> Iterator[pl.DataFrame]:
    """A Parquet object's rows, `rows` at a time (nothing when there is no object)."""
    if data is None:
        return
    for batch in pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=rows):
        yield pl.from_arrow(batch)  # type: ignore[misc]


def write_parquet(frames: Iterable[pl.DataFrame], path: Path, schema: pl.Schema) -> int:
    """Write frames one after the other as one Parquet file (one row group or more each); the rows."""
    rows = 0
    empty = pl.DataFrame(schema=schema)
    with pq.ParquetWriter(path, empty.to_arrow().schema, compression="zstd", compression_level=1) as writer:
        for frame in frames:
            if frame.height:
                writer.write_table(frame.to_arrow())
                rows += frame.height
    return rows
