"""The 11 `raw/<table>` assets, built by one factory from the source table specs."""

import dagster as dg
import polars as pl

from totesys_assets.partitions import add_partition_metadata, daily_partitions
from totesys_assets.resources.lake import split_by_day
from totesys_assets.resources.source import TotesysSource
from totesys_assets.specs import SOURCE_TABLES, TableSpec

RAW_GROUP = "raw"
SOURCE_POOL = "totesys_source"
OWNERS = ["team:data-engineering"]


def raw_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", table])


def versions_fingerprint(spec: TableSpec, frame: pl.DataFrame) -> dg.DataVersion:
    """A data version that changes exactly when the set of row versions (pk, last_updated) does.

    Automation reacts to data-version changes, so a refresh that finds nothing new triggers
    nothing downstream.
    """
    keys = frame.select(spec.primary_key, "last_updated")
    digest = int(keys.hash_rows(seed=1).sum()) if keys.height else 0
    return dg.DataVersion(f"{keys.height}-{digest:x}")


def build_raw_asset(spec: TableSpec) -> dg.AssetsDefinition:
    """One daily-partitioned asset extracting a source table's row versions by last_updated."""

    @dg.asset(
        key=raw_asset_key(spec.name),
        group_name=RAW_GROUP,
        description=(
            f"Every version of a `{spec.name}` row whose last_updated falls on the partition's day "
            f"(UTC), as Parquet in the lake. {spec.description}"
        ),
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=dg.RetryPolicy(max_retries=2, delay=3, backoff=dg.Backoff.EXPONENTIAL),
        pool=SOURCE_POOL,
        io_manager_key="raw_io_manager",
        kinds={"postgres", "s3", "polars"},
        owners=OWNERS,
        tags={"layer": "raw"},
        metadata={
            "dagster/column_schema": spec.table_schema(),
            "dagster/table_name": f"totesys.public.{spec.name}",
            "primary_key": spec.primary_key,
        },
    )
    def _raw(context: dg.AssetExecutionContext, source: TotesysSource) -> dg.Output:
        window = context.partition_time_window
        frame = source.extract(spec, window.start, window.end)
        days = context.partition_keys
        context.log.info(
            f"extracted {frame.height} {spec.name} row versions for {len(days)} day(s) {days[0]}..{days[-1]}"
        )
        by_day = split_by_day(frame, days)
        # Each partition gets its own row count (a range run must not stamp every day with the
        # whole range's number). The data version covers the run's extract: `dg.Output` takes one
        # version for all partitions of a run.
        add_partition_metadata(
            context, {day: {"dagster/row_count": part.height} for day, part in by_day.items()}
        )
        return dg.Output(by_day, data_version=versions_fingerprint(spec, frame))

    return _raw


raw_assets: list[dg.AssetsDefinition] = [build_raw_asset(spec) for spec in SOURCE_TABLES.values()]
