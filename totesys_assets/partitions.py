"""The daily partitions shared by the raw assets and the facts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.execution.context.metadata_logging import AssetMetadataHandle, OutputMetadataAccumulator
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from totesys_assets.settings import chunk_rows, partitions_start_date

# Keys are YYYY-MM-DD days of `last_updated` (UTC; the source stores naive timestamps).
# end_offset=1 includes the current, still-open day so it can be refreshed during the day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start_date(), end_offset=1, timezone="UTC", fmt="%Y-%m-%d"
)


def day_chunks(days: Sequence[str], rows: Mapping[str, int], budget: int | None = None) -> list[list[str]]:
    """The days (oldest first) in consecutive chunks of at most `budget` rows (TOTESYS_CHUNK_ROWS;
    `rows` per day, 0 where missing; a day above the budget is a chunk of its own), which long runs
    extract, transform and load one at a time. Chunks are whole days: a day is the lake's object
    and the unit every merge works on."""
    budget = budget or chunk_rows()
    chunks: list[list[str]] = []
    held = 0
    for day in days:
        n = rows.get(day, 0)
        if not chunks or (held + n > budget and held):
            chunks.append([])
            held = 0
        chunks[-1].append(day)
        held += n
    return chunks


def chunked(chunks: int) -> str:
    """How a run's log line says it went a chunk at a time (nothing for one chunk)."""
    return f" in {chunks} chunks of at most {chunk_rows():,} rows" if chunks > 1 else ""


def open_ends(days: Sequence[str]) -> tuple[bool, bool]:
    """Whether a run's days start at the first partition / end at the current one: those two also
    hold the rows dated before / after the partitions, so the run's window is open at that end."""
    return (
        days[0] == daily_partitions.get_first_partition_key(),
        days[-1] == daily_partitions.get_last_partition_key(),
    )


def partition_tags(first: str, last: str) -> dict[str, str]:
    """The run tags of a run over the days first..last: one partition, or a single-run range (the
    tags a `BackfillPolicy.single_run()` backfill gives its run; `RunRequest` has no range argument)."""
    if first == last:
        return {PARTITION_NAME_TAG: first}
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


def add_partition_metadata(
    context: dg.AssetExecutionContext,
    by_partition: Mapping[str, Mapping[str, Any]],
    asset_key: dg.AssetKey | None = None,
) -> None:
    """Per-partition asset metadata of a range run (each day its own row count, say), in one step.

    `context.add_asset_metadata(..., partition_key=day)` re-lists the run's partition range and
    copies all the metadata added so far on every call, so a run of N days pays N² of both,
    whatever the data volume. With Dagster's metadata
    accumulator (1.13, pinned) this checks the keys once and adds every day in one merge; it
    falls back to the public call if that internal ever changes shape. `asset_key` names the
    asset of a multi-asset.
    """
    asset_key = asset_key or context.asset_key
    step = context.get_step_execution_context()
    accumulator = getattr(step, "_metadata_accumulator", None)
    if not isinstance(accumulator, OutputMetadataAccumulator):
        for key, metadata in by_partition.items():
            context.add_asset_metadata(dict(metadata), asset_key=asset_key, partition_key=key)
        return
    unknown = sorted(set(by_partition) - set(context.partition_keys))
    if unknown:
        raise dg.DagsterInvariantViolationError(
            f"{asset_key.to_user_string()}: metadata for partitions this run does not target: {unknown[:5]}"
        )
    merged = dict(accumulator.per_output_metadata)
    for key, metadata in by_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=key)
        merged[handle] = {**merged.get(handle, {}), **metadata}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)  # noqa: SLF001
