"""Asset checks on the warehouse, generated from the specs (no per-table SQL by hand).

Blocking checks stop downstream assets from running on data that would corrupt them: a fact is
not loaded on top of a broken dimension, and automation does not carry a bad load further.

Fact checks look at the days the run loaded (from its partition tags; the whole table for an
unpartitioned run), so an incremental run's checks cost the same at any history size.
"""

from dataclasses import dataclass

import dagster as dg
from psycopg import sql

from totesys_assets.partitions import daily_partitions
from totesys_assets.resources.lake import LakeResource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import LAST_UPDATED, SOURCE_TABLES, WAREHOUSE_TABLES, TableSpec


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def run_days(tags: dict[str, str]) -> list[str] | None:
    """The partition days a run materialised (from its tags), or None for an unpartitioned run."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start, end = (
        tags.get("dagster/asset_partition_range_start"),
        tags.get("dagster/asset_partition_range_end"),
    )
    if start and end:
        return daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
    return None


@dataclass(frozen=True)
class Scope:
    """Which rows of a table a check looks at: all, or a fact's rows of the run's days."""

    days: list[str] | None = None

    @classmethod
    def of(cls, spec: TableSpec, context: dg.AssetCheckExecutionContext) -> "Scope":
        return cls(run_days(context.run.tags) if spec.is_fact else None)

    def where(self, alias: str | None = None) -> sql.Composable:
        if self.days is None:
            return sql.SQL("")
        column = sql.Identifier(alias, "last_updated_date") if alias else sql.Identifier("last_updated_date")
        return sql.SQL(" WHERE {} BETWEEN %(first_day)s AND %(last_day)s").format(column)

    @property
    def params(self) -> dict[str, str] | None:
        """Bound parameters for `where()` (named, so a query may repeat them)."""
        return {"first_day": self.days[0], "last_day": self.days[-1]} if self.days else None

    def label(self) -> str:
        return f"{self.days[0]}..{self.days[-1]}" if self.days else "all rows"


def primary_key_query(spec: TableSpec, scope: Scope = Scope()) -> sql.Composable:
    """Rows beyond the first per key (count(*) - count(DISTINCT key), as a hash aggregate: a
    DISTINCT over a row value always sorts, 3x slower on a full fact table)."""
    key = spec.natural_key or (spec.primary_key,)
    return sql.SQL(
        "SELECT coalesce(sum(n - 1), 0) FROM "
        "(SELECT count(*) AS n FROM {}{} GROUP BY {} HAVING count(*) > 1) AS duplicated"
    ).format(_ident(spec.name), scope.where(), sql.SQL(", ").join(_ident(c) for c in key))


def not_null_query(spec: TableSpec, scope: Scope = Scope()) -> sql.Composable:
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c} IS NULL) AS {c}").format(c=_ident(c))
        for c in spec.not_null_columns
    )
    return sql.SQL("SELECT {} FROM {}{}").format(counts, _ident(spec.name), scope.where())


def orphan_query(spec: TableSpec, scope: Scope = Scope()) -> sql.Composable:
    """Per foreign key: fact rows whose value has no dimension row."""
    parts = []
    for col in spec.foreign_keys:
        ref_table, ref_col = col.references.split(".")  # type: ignore[union-attr]
        parts.append(
            sql.SQL(
                "(SELECT count(*) FROM {t} f{where}{conj} NOT EXISTS "
                "(SELECT 1 FROM {r} d WHERE d.{rc} = f.{c})) AS {c}"
            ).format(
                t=_ident(spec.name),
                where=scope.where("f"),
                conj=sql.SQL(" AND" if scope.days else " WHERE"),
                r=_ident(ref_table),
                rc=_ident(ref_col),
                c=_ident(col.name),
            )
        )
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(parts))


def _named_counts(warehouse: WarehouseResource, query: sql.Composable, scope: Scope) -> dict[str, int]:
    row = warehouse.fetch_one_dict(query, scope.params)
    return {k: int(v) for k, v in row.items()}


def build_checks(spec: TableSpec) -> list[dg.AssetChecksDefinition]:
    asset = dg.AssetKey(spec.name)
    key_desc = ", ".join(spec.natural_key) if spec.natural_key else spec.primary_key

    @dg.asset_check(
        asset=asset, name="primary_key_unique", blocking=True,
        description=f"No two rows of {spec.name} share ({key_desc}).",
    )  # fmt: skip
    def _pk(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        scope = Scope.of(spec, context)
        dupes = int(warehouse.scalar(primary_key_query(spec, scope), scope.params))
        return dg.AssetCheckResult(
            passed=dupes == 0, metadata={"duplicate_keys": dupes, "scope": scope.label()}
        )

    @dg.asset_check(
        asset=asset, name="not_null", blocking=True,
        description=f"The NOT NULL columns of {spec.name} hold no NULL.",
    )  # fmt: skip
    def _not_null(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        scope = Scope.of(spec, context)
        bad = {c: n for c, n in _named_counts(warehouse, not_null_query(spec, scope), scope).items() if n}
        return dg.AssetCheckResult(
            passed=not bad, metadata={"null_counts": bad or "none", "scope": scope.label()}
        )

    checks = [_pk, _not_null]
    if spec.foreign_keys:

        @dg.asset_check(
            asset=asset, name="foreign_keys_resolve", blocking=True,
            description=f"Every id and date of {spec.name} has its dimension row.",
        )  # fmt: skip
        def _fks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
            scope = Scope.of(spec, context)
            bad = {c: n for c, n in _named_counts(warehouse, orphan_query(spec, scope), scope).items() if n}
            return dg.AssetCheckResult(
                passed=not bad, metadata={"orphans": bad or "none", "scope": scope.label()}
            )

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
            scope = Scope.of(spec, context)
            keys = [source.primary_key, LAST_UPDATED.name]
            versions = lake.read_raw(source.name, days=scope.days, columns=keys).unique().height
            count = sql.SQL("SELECT count(*) FROM {}{}").format(_ident(spec.name), scope.where())
            rows = int(warehouse.scalar(count, scope.params))
            return dg.AssetCheckResult(
                passed=rows == versions,
                metadata={
                    "scope": scope.label(),
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
