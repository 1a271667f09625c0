"""The 11 `raw/<table>` assets: one partitioned asset per source table, extracted by one step.

The assets are separate (own partitions, lineage, metadata, data versions, selection in the UI);
the extraction of a run is one step, so the tables can be pipelined. While Dagster stores table
N's day objects and records its per-partition materialisations (Python, in this thread), worker
threads are already extracting the next tables (the source database's work and Arrow decoding,
outside the GIL), splitting them into days and encoding the days the lake does not hold yet, so
that storing a table is only writing its objects (README, "One extraction step for the 11 raw
assets").
"""

import contextlib
import hashlib
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from totesys_assets.partitions import add_partition_metadata, chunked, daily_partitions, day_chunks, open_ends
from totesys_assets.pipelining import read_ahead
from totesys_assets.raw.conditions import raw_condition
from totesys_assets.resources.lake import (
    DELETED,
    Fingerprint,
    LakeResource,
    RawDays,
    capture_time,
    latest_captured,
    split_raw_days,
)
from totesys_assets.resources.lake.versions import day_of
from totesys_assets.resources.source import TotesysSource
from totesys_assets.settings import lake_kind, lake_location
from totesys_assets.specs import LAST_UPDATED, SOURCE_TABLES, TableSpec
from totesys_assets.spooling import Regrouped

RAW_GROUP = "raw"
RAW_STEP = "raw_extract"
SOURCE_POOL = "totesys_source"
OWNERS = ["team:data-engineering"]
# Extracts held beyond the one Dagster is storing, and extracted at once: four ahead in this order
# are at most two large tables in memory; two at a time, one table's source COPY overlaps another's
# splitting and encoding.
READ_AHEAD = 4
EXTRACT_WORKERS = 2
# Runs of at least this many days have the workers encode the new days (a backfill: 744 objects a
# table); a refresh of a day or two stores a handful, and the workers would list the lake (an S3
# LIST per table) for nothing.
ENCODE_AHEAD_MIN_DAYS = 31
# Small reference tables between the large ones: storing a small table's 744 partition events
# takes about as long as extracting the next large table, so the source is rarely left idle; the
# last table is small, so little is left to store once the source is done.
EXTRACT_ORDER = [
    "address",
    "sales_order",
    "counterparty",
    "purchase_order",
    "currency",
    "transaction",
    "department",
    "payment",
    "design",
    "payment_type",
    "staff",
]
assert sorted(EXTRACT_ORDER) == sorted(SOURCE_TABLES)


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def run_data_version(days: list[str], fingerprints: dict[str, Fingerprint]) -> dg.DataVersion:
    """The data version of a run's days: a digest of their source fingerprints.

    Automation reacts to data-version changes, and `dg.Output` takes one version for all the
    run's partitions; a run whose days all kept their fingerprint reuses the version they were
    recorded with instead (`data_version_for`).
    """
    digest = hashlib.blake2b(digest_size=12)
    for day in days:
        fp = fingerprints[day]
        digest.update(f"{day}:{fp.rows}:{fp.hash};".encode())
    return dg.DataVersion(digest.hexdigest())


def data_version_for(
    days: list[str], source: dict[str, Fingerprint], recorded: dict[str, Fingerprint]
) -> tuple[dg.DataVersion, set[str]]:
    """(the run's data version, the days that did not change since the lake recorded them).

    When no day changed and all were recorded with one data version (one range run, or one day),
    that version is kept, so a refresh that finds nothing new changes no version and triggers
    nothing downstream, after a range backfill too.
    """
    unchanged = {d for d in days if source[d].same_rows(recorded.get(d))}
    previous = {recorded[d].data_version for d in days if d in recorded}
    if len(unchanged) == len(days) and all(d in recorded for d in days) and len(previous) == 1:
        (version,) = previous
        if version:
            return dg.DataVersion(version), unchanged
    return run_data_version(days, source), unchanged


def tombstone_candidates(spec: TableSpec, stored: pl.DataFrame, extracted: pl.DataFrame) -> list[int]:
    """Keys whose latest state in a stored day is a live version but which the day's extract lacks
    (deleted at the source, or moved to another day: `TotesysSource.existing_ids` tells)."""
    pk = spec.primary_key
    live = latest_captured(spec, stored).filter(~pl.col(DELETED)).select(pk)
    return live.join(extracted.select(pk), on=pk, how="anti")[pk].to_list()


@dataclass(frozen=True)
class _Extract:
    spec: TableSpec
    by_day: RawDays
    rows: int
    version: dg.DataVersion
    seconds: float
    changed_days: int
    chunks: int


def _raw_spec(spec: TableSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=raw_asset_key(spec.name),
        group_name=RAW_GROUP,
        description=(
            f"Every captured version of a `{spec.name}` row whose last_updated falls on the partition's "
            f"day (UTC), and tombstones of rows deleted at the source, as Parquet in the lake. "
            f"{spec.description}"
        ),
        partitions_def=daily_partitions,
        kinds={"postgres", lake_kind(), "polars"},
        owners=OWNERS,
        tags={"layer": "raw"},
        automation_condition=raw_condition,
        deps=[dg.AssetKey(["totesys", spec.name])],  # the observable source (raw/detector.py)
        metadata={
            "lake_location": dg.MetadataValue.path(f"{lake_location()}/raw/{spec.name}/"),
            "dagster/column_schema": spec.table_schema(),
            "dagster/table_name": f"totesys.public.{spec.name}",
            "primary_key": spec.primary_key,
        },
    ).with_io_manager_key("raw_io_manager")


@dg.multi_asset(
    name=RAW_STEP,
    specs=[_raw_spec(SOURCE_TABLES[t]) for t in EXTRACT_ORDER],
    can_subset=True,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    retry_policy=dg.RetryPolicy(max_retries=2, delay=3, backoff=dg.Backoff.EXPONENTIAL),
    pool=SOURCE_POOL,
)
def raw_extract(
    context: dg.AssetExecutionContext, source: TotesysSource, lake: LakeResource
) -> Iterator[dg.Output]:
    """Extract the selected tables' row versions for the run's days, one table after the other."""
    window = context.partition_time_window
    days = context.partition_keys
    selected = [SOURCE_TABLES[t] for t in EXTRACT_ORDER if raw_asset_key(t) in context.selected_asset_keys]
    encode_ahead = len(days) >= ENCODE_AHEAD_MIN_DAYS
    # The first and the current partition also hold the rows dated before / after the range.
    first_key, last_key = (
        daily_partitions.get_first_partition_key(),
        daily_partitions.get_last_partition_key(),
    )
    assert first_key and last_key
    open_start, open_end = open_ends(days)
    # the days that also hold the rows dated before / after the partitions (as `split_by_day`)
    open_bounds = (days[0] if open_start else None, days[-1] if open_end else None)
    captured_at = capture_time()

    def extract(spec: TableSpec) -> _Extract:
        started = time.monotonic()
        recorded = lake.read_fingerprints(spec.name)
        start, end = None if open_start else window.start, None if open_end else window.end
        with contextlib.ExitStack() as stack:
            with source.snapshot(spec) as snap:
                by_source = snap.fingerprints(start, end, first_key, last_key)
                fingerprints = {d: Fingerprint(*by_source.get(d, (0, "0"))) for d in days}
                version, unchanged = data_version_for(days, fingerprints, recorded)
                changed = [d for d in days if d not in unchanged]
                # chunks of at most TOTESYS_CHUNK_ROWS rows of the days to store
                chunks = day_chunks(days, {d: fingerprints[d].rows for d in changed})
                if len(chunks) == 1:
                    frame = snap.extract(start, end)
                else:
                    # A long range in one scan of the source (from the snapshot the fingerprints
                    # describe), regrouped by day through local files, then a chunk of days at a
                    # time: only a batch and a chunk are in memory.
                    folder = Path(
                        stack.enter_context(tempfile.TemporaryDirectory(prefix=f"totesys-{spec.name}-"))
                    )
                    spool, keep = Regrouped(folder, day_of(LAST_UPDATED.name, *open_bounds)), set(changed)
                    for batch in snap.extract_batches(start, end):
                        spool.add(batch, keep=keep)
                        frame = batch.clear()
            present = set(lake.raw_days(spec.name)).intersection(changed) if changed else set()
            if len(chunks) == 1:
                by_day = split_days(spec, frame, chunks[0], unchanged, present, 0)
            else:
                by_day = RawDays({}, captured_at=captured_at)
                for n, chunk in enumerate(chunks):
                    if set(chunk) <= unchanged:  # (a chunk whose days all kept their fingerprint)
                        continue
                    rows_of_chunk = spool.take(chunk)
                    if rows_of_chunk is None:
                        rows_of_chunk = frame  # (empty)
                    part = split_days(spec, rows_of_chunk, chunk, unchanged, present, n, len(chunks))
                    by_day.spool_days(part)
                    by_day.gone.update(part.gone)
        by_day.unchanged = unchanged
        by_day.fingerprints = {
            d: Fingerprint(fp.rows, fp.hash, version.value) for d, fp in fingerprints.items()
        }
        rows = sum(fp.rows for fp in fingerprints.values())
        return _Extract(spec, by_day, rows, version, time.monotonic() - started, len(changed), len(chunks))

    def split_days(
        spec: TableSpec,
        frame: pl.DataFrame,
        chunk: list[str],
        unchanged: set[str],
        present: set[str],
        n: int,
        of: int = 1,
    ) -> RawDays:
        """The extracted rows of a chunk of the run's days (the `n`th of `of`), split into days,
        the new days encoded, the keys of the stored days that the source lost."""
        first, last = n == 0 and open_start, n == of - 1 and open_end
        # Days the lake does not hold yet are encoded here, off the thread Dagster records on.
        new_days = set(chunk) - present - unchanged if encode_ahead or of > 1 else set()
        by_day = split_raw_days(
            spec, frame, chunk, encode_days=new_days, captured_at=captured_at, open_start=first, open_end=last
        )
        del frame
        # Keys a changed day held that its extract lacks: deleted at the source, or moved away.
        existing = lake.read_raw_days(spec.name, sorted(present.intersection(chunk)))
        candidates = {d: tombstone_candidates(spec, existing[d].frame, by_day[d]) for d in existing}
        still_there = source.existing_ids(spec, sorted({k for ks in candidates.values() for k in ks}))
        by_day.gone = {d: [k for k in ks if k not in still_there] for d, ks in candidates.items()}
        if of == 1:
            by_day.existing = existing
        return by_day

    span = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    context.log.info(f"extracting {len(selected)} table(s) for {len(days)} day(s) {span}")
    for n, done in enumerate(read_ahead(selected, extract, ahead=READ_AHEAD, workers=EXTRACT_WORKERS), 1):
        spec, key = done.spec, raw_asset_key(done.spec.name)
        context.log.info(
            f"raw {n}/{len(selected)} {spec.name}: {done.rows:,} rows, {len(days)} day(s) {span}, "
            f"{done.changed_days} changed since the last capture, extracted{chunked(done.chunks)} in "
            f"{done.seconds:.1f} s"
        )
        # Each partition gets its own row count (a range run must not stamp every day with the
        # whole range's number). The data version covers the run's days: `dg.Output` takes one
        # version for all partitions of a run (`data_version_for`).
        add_partition_metadata(
            context,
            {day: {"dagster/row_count": done.by_day.fingerprints[day].rows} for day in days},
            asset_key=key,
        )
        with warnings.catch_warnings():  # data versions on outputs are beta in Dagster 1.13; we rely on them
            warnings.simplefilter("ignore", dg.BetaWarning)
            output = dg.Output(done.by_day, output_name=key.to_python_identifier(), data_version=done.version)
        yield output


raw_assets: list[dg.AssetsDefinition] = [raw_extract]
