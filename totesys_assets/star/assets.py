"""The star-schema assets: 8 current-state dimensions and 3 daily-partitioned facts.

Each asset reads the raw lake, calls one pure transform from `star.transforms`, loads the
warehouse through `WarehouseResource` (one transaction per table) and writes the same frame to
the lake's processed zone (`star/<table>/…`) for tools that read the star schema from S3.
The three facts are separate assets loaded by one step (`facts_load`), pipelined.
"""

import io
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from psycopg import sql
from pydantic import Field

from totesys_assets.partitions import chunked, daily_partitions
from totesys_assets.pipelining import concurrently
from totesys_assets.raw.assets import OWNERS, raw_asset_key
from totesys_assets.resources.lake import LakeResource, frame_to_parquet
from totesys_assets.resources.warehouse import LoadResult, WarehouseResource
from totesys_assets.settings import dashboard_url, lake_kind
from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES, TableSpec
from totesys_assets.star import key_ranges, transforms
from totesys_assets.star.conditions import dimension_condition, fact_condition, freshness_policy

DIMENSIONS_GROUP = "dimensions"
FACTS_GROUP = "facts"
WAREHOUSE_POOL = "warehouse"
FULL_RELOAD_EVERY = timedelta(hours=24)


@dataclass(frozen=True)
class StarTable:
    """How one warehouse table is built: its raw inputs and its pure transform."""

    name: str
    sources: tuple[str, ...]
    transform: Callable[..., pl.DataFrame]
    # Read only the raw objects written since the last load (large, single-source dimensions).
    # Small or joined dimensions re-read everything: a department change must reach its staff.
    incremental: bool = False

    @property
    def spec(self) -> TableSpec:
        return WAREHOUSE_TABLES[self.name]


DIMENSIONS: list[StarTable] = [
    StarTable("dim_staff", ("staff", "department"), transforms.dim_staff),
    StarTable("dim_location", ("address",), transforms.dim_location),
    StarTable("dim_design", ("design",), transforms.dim_design, incremental=True),
    StarTable("dim_currency", ("currency",), transforms.dim_currency),
    StarTable("dim_counterparty", ("counterparty", "address"), transforms.dim_counterparty),
    StarTable("dim_payment_type", ("payment_type",), transforms.dim_payment_type),
    StarTable("dim_transaction", ("transaction",), transforms.dim_transaction, incremental=True),
]
FACTS: list[StarTable] = [
    StarTable("fact_sales_order", ("sales_order",), transforms.fact_sales_order),
    StarTable("fact_purchase_order", ("purchase_order",), transforms.fact_purchase_order),
    StarTable("fact_payment", ("payment",), transforms.fact_payment),
]
FACT_BY_NAME = {f.name: f for f in FACTS}
FACTS_STEP = "facts_load"
# Keys of a large dimension transformed and loaded at a time (`_load_by_key_range`).
KEYS_PER_RANGE = 1_000_000
# Two workers: one loads fact_payment (the largest), the other fact_sales_order then
# fact_purchase_order, the longer chain. Reads and transforms take turns (see
# `facts`), so the chain goes first and payment, which has the slack, waits for its transform.
FACT_LOAD_ORDER = ["fact_sales_order", "fact_payment", "fact_purchase_order"]
# Facts loaded at once: one fact's client work (read, transform, COPY encoding) fills the core the
# other's server work (index builds, foreign key scans) leaves idle. Two cores; two at a time.
FACT_WORKERS = 2
assert sorted(FACT_LOAD_ORDER) == sorted(FACT_BY_NAME)


def _column_lineage_deps(spec: TableSpec) -> list[dg.AssetKey]:
    """The dimensions a table's foreign keys point at (the warehouse enforces them)."""
    return sorted({dg.AssetKey(c.references.split(".")[0]) for c in spec.foreign_keys}, key=str)  # type: ignore[union-attr]


def _links(spec: TableSpec) -> dict:
    """The dashboard's address on the facts (TOTESYS_DASHBOARD_URL, or the local one on the demo)."""
    url = dashboard_url()
    return {"dashboard": dg.MetadataValue.url(url)} if spec.is_fact and url else {}


def _common(spec: TableSpec) -> dict:
    return dict(
        description=spec.description,
        automation_condition=fact_condition if spec.is_fact else dimension_condition,
        freshness_policy=freshness_policy,
        kinds={"polars", "postgres", lake_kind()},
        owners=OWNERS,
        pool=WAREHOUSE_POOL,
        metadata={
            "dagster/column_schema": spec.table_schema(),
            "dagster/table_name": f"warehouse.public.{spec.name}",
            **_links(spec),
        },
    )


def _materialize_metadata(result: LoadResult, processed_uri: str, frame_rows: int) -> dict:
    # The column schema lives in the definition metadata; per-materialisation metadata stays lean
    # because Dagster stores it once per partition.
    return {
        **result.metadata(),
        "rows_in_frame": frame_rows,
        "processed_zone": dg.MetadataValue.path(processed_uri),
    }


class DimensionLoadConfig(dg.Config):
    """Run config of a dimension (Launchpad): force a rebuild from every raw object."""

    full_reload: bool = Field(
        default=False,
        description="Rebuild from every raw object instead of only those written since the last load.",
    )


@dataclass(frozen=True)
class LoadWindow:
    """Which raw objects a dimension reads: all (full) or those written since the last load."""

    since: datetime | None
    full_load_at: datetime

    @property
    def full(self) -> bool:
        return self.since is None

    def metadata(self, watermark: datetime | None) -> dict:
        meta = {
            "load_mode": "full" if self.full else "incremental",
            "full_load_at": dg.MetadataValue.timestamp(self.full_load_at),
        }
        if watermark is not None:
            meta["lake_watermark"] = dg.MetadataValue.timestamp(watermark)
        return meta


def load_window(context: dg.AssetExecutionContext, config: DimensionLoadConfig) -> LoadWindow:
    """Incremental from the previous load's lake watermark; full on first load, on request, or daily.

    The daily full rebuild bounds the effect of anything an incremental read cannot see (an old
    day re-extracted with an older version of a row than the one already loaded).
    """
    now = datetime.now(UTC)
    event = context.instance.get_latest_materialization_event(context.asset_key)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if config.full_reload or "lake_watermark" not in meta or "full_load_at" not in meta:
        return LoadWindow(since=None, full_load_at=now)
    full_at = datetime.fromtimestamp(meta["full_load_at"].value, UTC)
    if now - full_at > FULL_RELOAD_EVERY:
        return LoadWindow(since=None, full_load_at=now)
    return LoadWindow(since=datetime.fromtimestamp(meta["lake_watermark"].value, UTC), full_load_at=full_at)


def build_dimension_asset(table: StarTable) -> dg.AssetsDefinition:
    spec = table.spec

    @dg.asset(
        name=table.name,
        group_name=DIMENSIONS_GROUP,
        deps=[raw_asset_key(s) for s in table.sources],
        **_common(spec),
    )
    def _dim(
        context: dg.AssetExecutionContext,
        config: DimensionLoadConfig,
        lake: LakeResource,
        warehouse: WarehouseResource,
    ):
        if table.incremental:
            return _load_by_key_range(context, lake, warehouse, table, load_window(context, config))
        changes = [lake.read_raw_changes(s, None) for s in table.sources]
        frame = table.transform(*(f for f, _ in changes))
        watermark = max((m for _, m in changes if m is not None), default=None)
        window = LoadWindow(None, datetime.now(UTC))
        return _load_dimension(context, lake, warehouse, spec, frame, window, watermark)

    return _dim


def _load_by_key_range(
    context, lake: LakeResource, warehouse: WarehouseResource, table: StarTable, window: LoadWindow
):
    """A large single-source dimension a range of keys at a time (`key_ranges`): the raw objects
    a chunk of days at a time, the transform and the load (one transaction) a key range at a time,
    and the processed zone merged with the new rows as a stream."""
    spec, source = table.spec, table.sources[0]
    frames, watermark = lake.read_raw_change_chunks(source, window.since)
    key = lake.key("star", spec.name, f"{spec.name}.parquet")
    with tempfile.TemporaryDirectory(prefix=f"{spec.name}-") as tmp:
        folder = Path(tmp)
        ranges = key_ranges.by_key_range(
            frames, SOURCE_TABLES[source].primary_key, KEYS_PER_RANGE, folder / "raw"
        )
        new = key_ranges.spool((table.transform(f) for f in ranges), folder / "new")
        result = warehouse.upsert_dimension(spec.name, new)
        if window.full or result.rows:
            old = key_ranges.parquet_batches(None if window.full else lake.get(key))
            merged = key_ranges.merge_by_key(old, key_ranges.spooled(folder / "new"), spec.primary_key)
            key_ranges.write_parquet(
                merged,
                folder / "processed.parquet",
                pl.Schema({c: spec.polars_schema[c] for c in spec.insert_columns}),
            )
            lake.put_files({key: folder / "processed.parquet"})
    context.log.info(f"{spec.name} ({'full' if window.full else 'incremental'}): {result}")
    metadata = {**_materialize_metadata(result, lake.uri(key), result.rows), **window.metadata(watermark)}
    return dg.MaterializeResult(metadata=metadata)


def _load_dimension(
    context, lake: LakeResource, warehouse: WarehouseResource, spec: TableSpec, frame, window, watermark
):
    result = warehouse.upsert_dimension(spec.name, frame)
    key = lake.key("star", spec.name, f"{spec.name}.parquet")
    processed = frame
    if not window.full:  # merge the changed rows into the processed zone's current state
        existing = lake.get(key)
        if existing is not None:
            old = pl.read_parquet(io.BytesIO(existing))
            processed = pl.concat([old.join(frame, on=spec.primary_key, how="anti"), frame]).sort(
                spec.primary_key
            )
    lake.put(key, frame_to_parquet(processed))
    context.log.info(f"{spec.name} ({'full' if window.full else 'incremental'}): {result}")
    metadata = {**_materialize_metadata(result, lake.uri(key), frame.height), **window.metadata(watermark)}
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    name="dim_date",
    group_name=DIMENSIONS_GROUP,
    deps=[raw_asset_key(f.sources[0]) for f in FACTS],
    **_common(WAREHOUSE_TABLES["dim_date"]),
)
def dim_date(
    context: dg.AssetExecutionContext,
    config: DimensionLoadConfig,
    lake: LakeResource,
    warehouse: WarehouseResource,
):
    """Every day from 2022-11-01 (or earlier data) to max(latest fact date, today + 365).

    Incremental: only fact rows in raw objects written since the last load can widen the range,
    and every day already in the warehouse is kept.
    """
    window = load_window(context, config)
    tables = [f.sources[0] for f in FACTS]
    changes = {
        t: lake.read_raw_change_chunks(t, window.since, transforms.source_date_columns(t)) for t in tables
    }  # (read a chunk of days at a time: only the range of dates is kept)
    raw = ((t, frame) for t, (frames, _) in changes.items() for frame in frames)
    start, end = transforms.dim_date_range_from_sources(raw, date.today())
    if not window.full:
        have = warehouse.fetch_one_dict(
            sql.SQL("SELECT min(date_id) AS lo, max(date_id) AS hi FROM dim_date")
        )
        start = min(start, have["lo"] or start)
        end = max(end, have["hi"] or end)
    frame = transforms.dim_date(start, end)
    watermark = max((m for _, m in changes.values() if m is not None), default=window.since)
    return _load_dimension(context, lake, warehouse, WAREHOUSE_TABLES["dim_date"], frame, window, watermark)


def _fact_spec(table: StarTable) -> dg.AssetSpec:
    spec = table.spec
    common = _common(spec)
    del common["pool"]  # the step's (FACTS_STEP)
    return dg.AssetSpec(
        key=table.name,
        group_name=FACTS_GROUP,
        deps=[raw_asset_key(table.sources[0]), *_column_lineage_deps(spec)],
        partitions_def=daily_partitions,
        **common,
    )


@dataclass(frozen=True)
class _FactLoad:
    table: StarTable
    result: LoadResult
    frame_rows: int
    rejected_versions: int = 0
    chunks: int = 1


@dg.multi_asset(
    name=FACTS_STEP,
    specs=[_fact_spec(FACT_BY_NAME[name]) for name in FACT_LOAD_ORDER],
    can_subset=True,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=WAREHOUSE_POOL,
)
def facts(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """Load the selected facts for the run's days: read the raw days, transform, append, and
    write the processed zone.

    That work runs on FACT_WORKERS threads, one fact each (each load is one transaction), while
    this thread has Dagster record the per-day materialisations of the facts already done. First
    loads of empty facts COPY into a temporary stage before they lock the dimensions their foreign
    keys reference, so two of them take turns only for their last part (`WarehouseResource`).
    """
    days = context.partition_keys
    selected = [FACT_BY_NAME[n] for n in FACT_LOAD_ORDER if dg.AssetKey(n) in context.selected_asset_keys]

    # One read and transform at a time: their intermediate frames are the step's largest, and the
    # allocator keeps freed pages a while, so two at once set the peak; one at a time costs no time.
    one_transform = threading.Lock()

    def load(table: StarTable) -> _FactLoad:
        spec = table.spec
        keys = warehouse.dimension_keys(spec.name)
        rejected: list[pl.DataFrame] = []
        deletions: list[pl.DataFrame] = []
        rows = 0
        parts = lake.raw_chunks(table.sources[0], days)

        def chunks(spool: Path) -> Iterator[pl.DataFrame]:
            """The fact's rows a chunk of days at a time (bounded memory), oldest first; each
            chunk's processed-zone objects wait in `spool` until the warehouse has committed."""
            nonlocal rows
            raws = lake.read_raw_chunks(table.sources[0], parts)
            while True:
                with one_transform:
                    raw = next(raws, None)
                    if raw is None:
                        return
                    # A version that cannot be loaded (a bad date, a NULL, a value without its
                    # dimension row) is set aside into the quarantine, the others load: one bad
                    # version does not hold back the day. The `no_rejected_versions` check fails,
                    # naming it, until a corrected version is loaded.
                    split = transforms.split_fact(spec.name, raw, keys)
                    deletions.append(transforms.fact_deletions(spec.name, raw))
                    del raw
                rejected.append(split.rejected)
                frame = split.frame
                rows += frame.height
                if frame.height:
                    for (day,), part in frame.partition_by("last_updated_date", as_dict=True).items():
                        (spool / f"{day.isoformat()}.parquet").write_bytes(frame_to_parquet(part))
                yield frame

        with tempfile.TemporaryDirectory(prefix=f"{spec.name}-") as spool:
            result = warehouse.append_facts(spec.name, chunks(Path(spool)))
            lake.put_files(
                {lake.key("star", spec.name, path.name): path for path in sorted(Path(spool).iterdir())}
            )
        quarantined = pl.concat(rejected)
        versions = transforms.rejected_version_count(quarantined)
        if versions:
            warehouse.record_rejections(spec.name, quarantined)
            first = quarantined.row(0, named=True)
            context.log.warning(
                f"{spec.name}: {versions} source version(s) rejected and not loaded, "
                f"e.g. {first['source_table']} {first['source_id']} (last_updated {first['last_updated']}): "
                f"{first['column_name']} = {first['value']!r} {first['reason']} "
                "(quarantine.rejected_versions)"
            )
        # Rows deleted at the source leave the `*_current` views; the history keeps their versions.
        gone = pl.concat(deletions)
        if warehouse.record_deletions(spec.name, gone):
            context.log.info(
                f"{spec.name}: {gone.height} deletion(s) at the source recorded (fact_deletions)"
            )
        return _FactLoad(table, result, rows, versions, len(parts))

    span = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    context.log.info(f"loading {len(selected)} fact(s) for {len(days)} day(s) {span}")
    for n, done in enumerate(concurrently(selected, load, workers=FACT_WORKERS), 1):
        spec, result = done.table.spec, done.result
        context.log.info(
            f"facts {n}/{len(selected)} {spec.name}: {result.inserted:,} new version(s) of {result.rows:,}, "
            f"{len(days)} day(s) {span}{chunked(done.chunks)}, {result.table_rows:,} rows in the table, "
            f"loaded in {result.seconds:.1f} s"
        )
        processed = lake.uri(lake.key("star", spec.name))
        metadata = _materialize_metadata(done.result, processed, done.frame_rows)
        yield dg.MaterializeResult(
            asset_key=spec.name, metadata={**metadata, "versions_rejected": done.rejected_versions}
        )


dimension_assets: list[dg.AssetsDefinition] = [dim_date, *(build_dimension_asset(d) for d in DIMENSIONS)]
fact_assets: list[dg.AssetsDefinition] = [facts]
star_assets = [*dimension_assets, *fact_assets]
