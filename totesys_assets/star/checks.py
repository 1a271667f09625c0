"""Asset checks on the warehouse, generated from the specs (no per-table SQL by hand).

Blocking checks stop downstream assets from running on data that would corrupt them: a fact is
not loaded on top of a broken dimension, and automation does not carry a bad load further.
"""

import dagster as dg
from psycopg import sql

from totesys_assets.partitions import daily_partitions
from totesys_assets.resources.lake import LakeResource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import LAST_UPDATED, SOURCE_TABLES, WAREHOUSE_TABLES, TableSpec


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def primary_key_query(spec: TableSpec) -> sql.Composable:
    key = spec.natural_key or (spec.primary_key,)
    return sql.SQL("SELECT count(*) - count(DISTINCT ({})) FROM {}").format(
        sql.SQL(", ").join(_ident(c) for c in key), _ident(spec.name)
    )


def not_null_query(spec: TableSpec) -> sql.Composable:
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c} IS NULL) AS {c}").format(c=_ident(c))
        for c in spec.not_null_columns
    )
    return sql.SQL("SELECT {} FROM {}").format(counts, _ident(spec.name))


def orphan_query(spec: TableSpec) -> sql.Composable:
    """Per foreign key: fact rows whose value has no dimension row."""
    parts = []
    for col in spec.foreign_keys:
        ref_table, ref_col = col.references.split(".")  # type: ignore[union-attr]
        parts.append(
            sql.SQL(
                "(SELECT count(*) FROM {t} f WHERE NOT EXISTS (SELECT 1 FROM {r} d WHERE d.{rc} = f.{c})) AS {c}"
            ).format(t=_ident(spec.name), r=_ident(ref_table), rc=_ident(ref_col), c=_ident(col.name))
        )
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(parts))


def run_days(tags: dict[str, str]) -> list[str] | None:
    """The partition days a run materialised (from its tags), or None for an unpartitioned run.

    Reconciling only those days keeps the check's cost independent of the lake's history.
    """
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    return None


def _named_counts(warehouse: WarehouseResource, query: sql.Composable) -> dict[str, int]:
    row = warehouse.fetch_one_dict(query)
    return {k: int(v) for k, v in row.items()}


def build_checks(spec: TableSpec) -> list[dg.AssetChecksDefinition]:
    asset = dg.AssetKey(spec.name)
    key_desc = ", ".join(spec.natural_key) if spec.natural_key else spec.primary_key

    @dg.asset_check(
        asset=asset, name="primary_key_unique", blocking=True,
        description=f"No two rows of {spec.name} share ({key_desc}).",
    )  # fmt: skip
    def _pk(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        dupes = int(warehouse.scalar(primary_key_query(spec)))
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": dupes})

    @dg.asset_check(
        asset=asset, name="not_null", blocking=True,
        description=f"The NOT NULL columns of {spec.name} hold no NULL.",
    )  # fmt: skip
    def _not_null(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        nulls = _named_counts(warehouse, not_null_query(spec))
        bad = {c: n for c, n in nulls.items() if n}
        return dg.AssetCheckResult(passed=not bad, metadata={"null_counts": bad or "none"})

    checks = [_pk, _not_null]
    if spec.foreign_keys:

        @dg.asset_check(
            asset=asset, name="foreign_keys_resolve", blocking=True,
            description=f"Every id and date of {spec.name} has its dimension row.",
        )  # fmt: skip
        def _fks(warehouse: WarehouseResource) -> dg.AssetCheckResult:
            orphans = _named_counts(warehouse, orphan_query(spec))
            bad = {c: n for c, n in orphans.items() if n}
            return dg.AssetCheckResult(passed=not bad, metadata={"orphans": bad or "none"})

        checks.append(_fks)

    if spec.is_fact:
        source = SOURCE_TABLES[spec.source_table]  # type: ignore[index]

        @dg.asset_check(
            asset=asset, name="reconciles_with_lake", blocking=True,
            description=f"{spec.name} holds exactly one row per distinct version of raw/{source.name}.",
        )  # fmt: skip
        def _reconcile(
            context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
        ) -> dg.AssetCheckResult:
            days = run_days(context.run.tags)
            keys = [source.primary_key, LAST_UPDATED.name]
            versions = lake.read_raw(source.name, days=days, columns=keys).unique().height
            count = sql.SQL("SELECT count(*) FROM {}").format(_ident(spec.name))
            if days is None:
                rows = int(warehouse.scalar(count))
            else:
                where = sql.SQL(" WHERE last_updated_date BETWEEN %s AND %s")
                rows = int(warehouse.scalar(count + where, (days[0], days[-1])))
            return dg.AssetCheckResult(
                passed=rows == versions,
                metadata={
                    "days": f"{days[0]}..{days[-1]}" if days else "all",
                    "lake_versions": versions,
                    "warehouse_rows": rows,
                    "difference": rows - versions,
                },
            )

        checks.append(_reconcile)
    return checks


star_checks: list[dg.AssetChecksDefinition] = [
    c for spec in WAREHOUSE_TABLES.values() for c in build_checks(spec)
]
