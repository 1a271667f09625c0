"""The star-schema assets: 8 current-state dimensions and 3 daily-partitioned facts.

Each asset reads the raw lake, calls one pure transform from `star.transforms`, loads the
warehouse through `WarehouseResource` (one transaction per table) and writes the same frame to
the lake's processed zone (`star/<table>/…`) for tools that read the star schema from S3.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import dagster as dg
import polars as pl

from totesys_assets.automation.conditions import dimension_condition, fact_condition, freshness_policy
from totesys_assets.partitions import daily_partitions
from totesys_assets.raw.assets import OWNERS, raw_asset_key
from totesys_assets.resources.lake import LakeResource, frame_to_parquet
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import WAREHOUSE_TABLES, TableSpec
from totesys_assets.star import transforms

DIMENSIONS_GROUP = "dimensions"
FACTS_GROUP = "facts"
WAREHOUSE_POOL = "warehouse"


@dataclass(frozen=True)
class StarTable:
    """How one warehouse table is built: its raw inputs and its pure transform."""

    name: str
    sources: tuple[str, ...]
    transform: Callable[..., pl.DataFrame]

    @property
    def spec(self) -> TableSpec:
        return WAREHOUSE_TABLES[self.name]


DIMENSIONS: list[StarTable] = [
    StarTable("dim_staff", ("staff", "department"), transforms.dim_staff),
    StarTable("dim_location", ("address",), transforms.dim_location),
    StarTable("dim_design", ("design",), transforms.dim_design),
    StarTable("dim_currency", ("currency",), transforms.dim_currency),
    StarTable("dim_counterparty", ("counterparty", "address"), transforms.dim_counterparty),
    StarTable("dim_payment_type", ("payment_type",), transforms.dim_payment_type),
    StarTable("dim_transaction", ("transaction",), transforms.dim_transaction),
]
FACTS: list[StarTable] = [
    StarTable("fact_sales_order", ("sales_order",), transforms.fact_sales_order),
    StarTable("fact_purchase_order", ("purchase_order",), transforms.fact_purchase_order),
    StarTable("fact_payment", ("payment",), transforms.fact_payment),
]
FACT_BY_NAME = {f.name: f for f in FACTS}


def _column_lineage_deps(spec: TableSpec) -> list[dg.AssetKey]:
    """The dimensions a table's foreign keys point at (the warehouse enforces them)."""
    return sorted({dg.AssetKey(c.references.split(".")[0]) for c in spec.foreign_keys}, key=str)  # type: ignore[union-attr]


def _common(spec: TableSpec) -> dict:
    return dict(
        description=spec.description,
        automation_condition=fact_condition if spec.is_fact else dimension_condition,
        freshness_policy=freshness_policy,
        kinds={"polars", "postgres", "s3"},
        owners=OWNERS,
        pool=WAREHOUSE_POOL,
        metadata={
            "dagster/column_schema": spec.table_schema(),
            "dagster/table_name": f"warehouse.public.{spec.name}",
        },
    )


def _materialize_metadata(result, spec: TableSpec, processed_uri: str, frame: pl.DataFrame) -> dict:
    return {
        **result.metadata(),
        "rows_in_frame": frame.height,
        "processed_zone": dg.MetadataValue.path(processed_uri),
        "dagster/column_schema": spec.table_schema(),
    }


def build_dimension_asset(table: StarTable) -> dg.AssetsDefinition:
    spec = table.spec

    @dg.asset(
        name=table.name,
        group_name=DIMENSIONS_GROUP,
        deps=[raw_asset_key(s) for s in table.sources],
        **_common(spec),
    )
    def _dim(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
        frames = [lake.read_raw(s) for s in table.sources]
        frame = table.transform(*frames)
        return _load_dimension(context, lake, warehouse, spec, frame)

    return _dim


def _load_dimension(context, lake: LakeResource, warehouse: WarehouseResource, spec: TableSpec, frame):
    result = warehouse.upsert_dimension(spec.name, frame)
    key = lake.key("star", spec.name, f"{spec.name}.parquet")
    lake.put(key, frame_to_parquet(frame))
    context.log.info(f"{spec.name}: {result}")
    return dg.MaterializeResult(metadata=_materialize_metadata(result, spec, lake.uri(key), frame))


@dg.asset(
    name="dim_date",
    group_name=DIMENSIONS_GROUP,
    deps=[raw_asset_key(f.sources[0]) for f in FACTS],
    **_common(WAREHOUSE_TABLES["dim_date"]),
)
def dim_date(context: dg.AssetExecutionContext, lake: LakeResource, warehouse: WarehouseResource):
    """Every day from 2022-11-01 (or earlier data) to max(latest fact date, today + 365)."""
    facts = [f.transform(lake.read_raw(f.sources[0])) for f in FACTS]
    start, end = transforms.dim_date_range(facts, date.today())
    frame = transforms.dim_date(start, end)
    return _load_dimension(context, lake, warehouse, WAREHOUSE_TABLES["dim_date"], frame)


def build_fact_asset(table: StarTable) -> dg.AssetsDefinition:
    spec = table.spec
    source = table.sources[0]

    @dg.asset(
        name=table.name,
        group_name=FACTS_GROUP,
        ins={"raw": dg.AssetIn(key=raw_asset_key(source))},
        deps=_column_lineage_deps(spec),
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **_common(spec),
    )
    def _fact(
        context: dg.AssetExecutionContext, raw: pl.DataFrame, lake: LakeResource, warehouse: WarehouseResource
    ):
        frame = table.transform(raw)
        result = warehouse.append_facts(spec.name, frame)
        days = context.partition_keys
        by_day = frame.partition_by("last_updated_date", as_dict=True) if frame.height else {}
        for (day,), part in by_day.items():
            lake.put(lake.key("star", spec.name, f"{day.isoformat()}.parquet"), frame_to_parquet(part))
        context.log.info(f"{spec.name} {days[0]}..{days[-1]}: {result}")
        return dg.MaterializeResult(
            metadata=_materialize_metadata(result, spec, lake.uri(lake.key("star", spec.name)), frame)
        )

    return _fact


dimension_assets: list[dg.AssetsDefinition] = [dim_date, *(build_dimension_asset(d) for d in DIMENSIONS)]
fact_assets: list[dg.AssetsDefinition] = [build_fact_asset(f) for f in FACTS]
star_assets = [*dimension_assets, *fact_assets]
