"""Asset checks on the warehouse, generated from the specs (no per-table SQL by hand).

Blocking checks keep downstream assets off data that would corrupt them. Fact checks look at the
days the run loaded (the whole table for an unpartitioned run), so an incremental run's checks cost
the same at any history size. Key, NOT NULL and foreign-key checks pass naming the constraint when
PostgreSQL enforces it (a valid unique index, NOT NULL, a validated foreign key with its triggers
enabled); whatever is not enforced is counted in the data.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import dagster as dg
import polars as pl
from psycopg import sql

from totesys_assets.partitions import daily_partitions, open_ends
from totesys_assets.pipelining import concurrently
from totesys_assets.resources.lake import DELETED, ROW_HASH, LakeResource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import LAST_UPDATED, SOURCE_TABLES, WAREHOUSE_TABLES, Column, TableSpec


def run_days(tags: dict[str, str]) -> list[str] | None:
    """The partition days a run materialised (from its tags), or None for an unpartitioned run."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start = tags.get("dagster/asset_partition_range_start")
    end = tags.get("dagster/asset_partition_range_end")
    if start and end:
        return list(daily_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    return None


OPEN_START, OPEN_END = "0001-01-01", "9999-12-31"  # the bounds of "all days" as dates


@dataclass(frozen=True)
class Scope:
    """Which rows of a table a check looks at: all, or a fact's rows of the run's days."""

    days: list[str] | None = None

    @classmethod
    def of(cls, spec: TableSpec, context: dg.AssetCheckExecutionContext) -> "Scope":
        return cls(run_days(dict(context.run.tags)) if spec.is_fact else None)

    def where(self, alias: str | None = None) -> sql.Composable:
        if self.days is None:
            return sql.SQL("")
        column = sql.Identifier(alias, "last_updated_date") if alias else sql.Identifier("last_updated_date")
        return sql.SQL(" WHERE {} BETWEEN %(first_day)s AND %(last_day)s").format(column)

    def bounds(self) -> tuple[str, str]:
        """The first and last `last_updated_date` in scope; open at the first or the current
        partition, which also hold the rows dated before / after them (`open_ends`)."""
        if not self.days:
            return OPEN_START, OPEN_END
        at_first, at_current = open_ends(self.days)
        return (OPEN_START if at_first else self.days[0], OPEN_END if at_current else self.days[-1])

    @property
    def params(self) -> dict[str, str] | None:
        """Bound parameters for `where()` (named, so a query may repeat them)."""
        return dict(zip(("first_day", "last_day"), self.bounds(), strict=True)) if self.days else None

    def label(self) -> str:
        return f"{self.days[0]}..{self.days[-1]}" if self.days else "all rows"


def primary_key_query(spec: TableSpec, scope: Scope = Scope()) -> sql.Composable:
    """Rows beyond the first per key, as a hash aggregate (a DISTINCT over a row value sorts)."""
    key = spec.natural_key or (spec.primary_key,)
    return sql.SQL(
        "SELECT coalesce(sum(n - 1), 0) FROM "
        "(SELECT count(*) AS n FROM {}{} GROUP BY {} HAVING count(*) > 1) AS duplicated"
    ).format(sql.Identifier(spec.name), scope.where(), sql.SQL(", ").join(sql.Identifier(c) for c in key))


def not_null_query(
    spec: TableSpec, scope: Scope = Scope(), columns: list[str] | None = None
) -> sql.Composable:
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE {c} IS NULL) AS {c}").format(c=sql.Identifier(c))
        for c in (spec.not_null_columns if columns is None else columns)
    )
    return sql.SQL("SELECT {} FROM {}{}").format(counts, sql.Identifier(spec.name), scope.where())


def orphan_query(spec: TableSpec, scope: Scope = Scope(), columns: list[str] | None = None) -> sql.Composable:
    """Per foreign key: fact rows whose value has no dimension row."""
    parts = []
    for col in spec.foreign_keys:
        if columns is not None and col.name not in columns:
            continue
        ref_table, ref_col = col.references.split(".")  # type: ignore[union-attr]
        parts.append(
            sql.SQL(
                "(SELECT count(*) FROM {t} f{where}{conj} NOT EXISTS "
                "(SELECT 1 FROM {r} d WHERE d.{rc} = f.{c})) AS {c}"
            ).format(
                t=sql.Identifier(spec.name),
                where=scope.where("f"),
                conj=sql.SQL(" AND" if scope.days else " WHERE"),
                r=sql.Identifier(ref_table),
                rc=sql.Identifier(ref_col),
                c=sql.Identifier(col.name),
            )
        )
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(parts))


def _named_counts(warehouse: WarehouseResource, query: sql.Composable, scope: Scope) -> dict[str, int]:
    row = warehouse.fetch_one_dict(query, scope.params)
    return {k: int(v) for k, v in row.items()}


ENFORCED_QUERY = sql.SQL("""
SELECT
  (SELECT coalesce(json_agg(json_build_object('name', c.conname, 'columns',
            (SELECT array_agg(a.attname::text) FROM pg_attribute a
             WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)))), '[]')
   FROM pg_constraint c JOIN pg_index i ON i.indexrelid = c.conindid
   WHERE c.conrelid = %(table)s::regclass AND c.contype IN ('p', 'u') AND i.indisvalid AND i.indisready
  ) AS unique_keys,
  (SELECT coalesce(array_agg(attname::text), '{}') FROM pg_attribute
   WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped AND attnotnull
  ) AS not_null,
  (SELECT coalesce(json_agg(json_build_object('name', c.conname, 'column', a.attname::text,
            'references', (c.confrelid::regclass)::text || '.' || fa.attname::text)), '[]')
   FROM pg_constraint c
   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
   JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
   WHERE c.conrelid = %(table)s::regclass AND c.contype = 'f' AND c.convalidated
     AND cardinality(c.conkey) = 1
     AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgconstraint = c.oid AND t.tgenabled = 'D')
  ) AS foreign_keys
""")


@dataclass(frozen=True)
class Enforced:
    """What PostgreSQL itself guarantees on a table (from the catalog)."""

    unique_keys: dict[frozenset[str], str] = field(default_factory=dict)  # key columns -> constraint
    not_null: frozenset[str] = frozenset()
    foreign_keys: dict[str, str] = field(default_factory=dict)  # "col->table.col" -> constraint

    @classmethod
    def read(cls, warehouse: WarehouseResource, spec: TableSpec) -> "Enforced":
        row = warehouse.fetch_one_dict(ENFORCED_QUERY, {"table": spec.name})
        return cls(
            unique_keys={frozenset(k["columns"]): k["name"] for k in row["unique_keys"]},
            not_null=frozenset(row["not_null"]),
            foreign_keys={f"{k['column']}->{k['references']}": k["name"] for k in row["foreign_keys"]},
        )

    def fk(self, column: Column) -> str | None:
        """The validated, enabled constraint enforcing this foreign-key column, if any."""
        return self.foreign_keys.get(f"{column.name}->{column.references}")


def evaluate_primary_key(warehouse: WarehouseResource, spec: TableSpec, scope: Scope) -> dg.AssetCheckResult:
    key = spec.natural_key or (spec.primary_key,)
    constraint = Enforced.read(warehouse, spec).unique_keys.get(frozenset(key))
    if constraint is not None:
        dupes, enforced_by = 0, constraint
    else:
        dupes = int(warehouse.scalar(primary_key_query(spec, scope), scope.params))
        enforced_by = "none (counted)"
    return dg.AssetCheckResult(
        passed=dupes == 0,
        metadata={"duplicate_keys": dupes, "enforced_by": enforced_by, "scope": scope.label()},
    )


def evaluate_not_null(warehouse: WarehouseResource, spec: TableSpec, scope: Scope) -> dg.AssetCheckResult:
    enforced = Enforced.read(warehouse, spec)
    counted = [c for c in spec.not_null_columns if c not in enforced.not_null]
    bad: dict[str, int] = {}
    if counted:
        counts = _named_counts(warehouse, not_null_query(spec, scope, counted), scope)
        bad = {c: n for c, n in counts.items() if n}
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "null_counts": bad or "none",
            "enforced_by": f"NOT NULL on {len(spec.not_null_columns) - len(counted)} of "
            f"{len(spec.not_null_columns)} columns",
            "counted_columns": counted or "none",
            "scope": scope.label(),
        },
    )


def evaluate_foreign_keys(warehouse: WarehouseResource, spec: TableSpec, scope: Scope) -> dg.AssetCheckResult:
    enforced = Enforced.read(warehouse, spec)
    counted = [c.name for c in spec.foreign_keys if enforced.fk(c) is None]
    bad: dict[str, int] = {}
    if counted:
        counts = _named_counts(warehouse, orphan_query(spec, scope, counted), scope)
        bad = {c: n for c, n in counts.items() if n}
    return dg.AssetCheckResult(
        passed=not bad,
        metadata={
            "orphans": bad or "none",
            "enforced_by": sorted(n for c in spec.foreign_keys if (n := enforced.fk(c))) or "none",
            "counted_columns": counted or "none",
            "scope": scope.label(),
        },
    )


@dataclass(frozen=True)
class TableCheck:
    """One check of one warehouse table: its name, what it promises, and how it is evaluated."""

    spec: TableSpec
    name: str
    description: str
    evaluate: Callable[[LakeResource, WarehouseResource, TableSpec, Scope], dg.AssetCheckResult]

    @property
    def key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(dg.AssetKey(self.spec.name), self.name)


def evaluate_reconcile(
    lake: LakeResource, warehouse: WarehouseResource, spec: TableSpec, scope: Scope
) -> dg.AssetCheckResult:
    """A fact holds exactly one row per distinct version of its raw source in the scope's days,
    but for the versions it set aside (quarantined: `no_rejected_versions` reports those)."""
    source = SOURCE_TABLES[spec.source_table]  # type: ignore[index]
    keys = [source.primary_key, LAST_UPDATED.name, ROW_HASH]  # a version: key, last_updated, content
    # A version lives in the day of its last_updated: counted a chunk of days at a time.
    days = scope.days if scope.days is not None else lake.raw_days(source.name)
    chunks = lake.read_raw_chunks(source.name, lake.raw_chunks(source.name, days), columns=[*keys, DELETED])
    versions = sum(c.filter(~pl.col(DELETED)).select(keys).unique().height for c in chunks)
    count = sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(spec.name), scope.where())
    rows = int(warehouse.scalar(count, scope.params))
    rejected = warehouse.rejected_unloaded_versions(spec.name, *scope.bounds())
    return dg.AssetCheckResult(
        passed=rows == versions - rejected,
        metadata={
            "scope": scope.label(),
            "lake_versions": versions,
            "rejected_versions": rejected,
            "warehouse_rows": rows,
            "difference": rows - (versions - rejected),
        },
    )


def _markdown_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def evaluate_rejections(
    lake: LakeResource, warehouse: WarehouseResource, spec: TableSpec, scope: Scope
) -> dg.AssetCheckResult:
    """No source version of the fact is rejected (quarantined) without a loaded version of the
    same row since. Over the whole table, whatever days the run loaded: a later day's run must not
    turn it green while an older day still holds a rejected version."""
    total, first = warehouse.open_rejections(spec.name)
    shown = [
        f"{r['source_table']}.{SOURCE_TABLES[r['source_table']].primary_key}={r['source_id']} "
        f"(last_updated {r['last_updated']}): {r['column_name']} = {r['value']!r} {r['reason']}"
        for r in first
    ]
    # (shown to the user, never executed)
    where = f"SELECT * FROM quarantine.open_rejections WHERE fact = '{spec.name}'"  # noqa: S608  # nosec B608
    if not total:
        return dg.AssetCheckResult(passed=True, metadata={"open_rejections": 0, "query": where})
    description = f"{spec.name}: {total} source version(s) rejected and not loaded: " + "; ".join(shown[:5])
    if total > 5:
        description += f"; … ({where})"
    table = "\n".join(
        ["| source row | last_updated | column | value | why |", "|---|---|---|---|---|"]
        + [
            "| "
            + " | ".join(
                _markdown_cell(c)
                for c in (
                    f"{r['source_table']} {r['source_id']}",
                    r["last_updated"],
                    r["column_name"],
                    repr(r["value"]),
                    r["reason"],
                )
            )
            + " |"
            for r in first
        ]
    )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={"open_rejections": total, "rejected": dg.MetadataValue.md(table), "query": where},
    )


def table_checks(spec: TableSpec) -> list[TableCheck]:
    """The checks of one table, generated from its spec."""
    key_desc = ", ".join(spec.natural_key) if spec.natural_key else spec.primary_key
    checks = [
        TableCheck(
            spec, "primary_key_unique", f"No two rows of {spec.name} share ({key_desc}).",
            lambda lake, wh, spec, scope: evaluate_primary_key(wh, spec, scope),
        ),
        TableCheck(
            spec, "not_null", f"The NOT NULL columns of {spec.name} hold no NULL.",
            lambda lake, wh, spec, scope: evaluate_not_null(wh, spec, scope),
        ),
    ]  # fmt: skip
    if spec.foreign_keys:
        checks.append(
            TableCheck(
                spec, "foreign_keys_resolve", f"Every id and date of {spec.name} has its dimension row.",
                lambda lake, wh, spec, scope: evaluate_foreign_keys(wh, spec, scope),
            )
        )  # fmt: skip
    if spec.is_fact:
        source = SOURCE_TABLES[spec.source_table]  # type: ignore[index]
        description = f"{spec.name} holds exactly one row per distinct version of raw/{source.name}."
        # first: reading the lake makes it the slowest, so it starts at once
        checks.insert(0, TableCheck(spec, "reconciles_with_lake", description, evaluate_reconcile))
        checks.append(
            TableCheck(
                spec,
                "no_rejected_versions",
                f"No version of raw/{source.name} is held out of {spec.name} (quarantine.open_rejections): "
                "a bad value fails this check naming the row, the column and the value until a corrected "
                "version is loaded.",
                evaluate_rejections,
            )
        )
    return checks


def build_checks(name: str, specs: list[TableSpec]) -> dg.AssetChecksDefinition:
    """The checks of a group of tables as one step (each still its own blocking, selectable check),
    evaluated CHECK_WORKERS at a time instead of paying Dagster's bookkeeping per step."""
    checks = [check for spec in specs for check in table_checks(spec)]

    @dg.multi_asset_check(
        name=name,
        specs=[
            dg.AssetCheckSpec(c.name, asset=c.spec.name, blocking=True, description=c.description)
            for c in checks
        ],
        can_subset=True,
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, lake: LakeResource, warehouse: WarehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        selected = [c for c in checks if c.key in context.selected_asset_check_keys]

        def evaluate(check: TableCheck) -> dg.AssetCheckResult:
            result = check.evaluate(lake, warehouse, check.spec, Scope.of(check.spec, context))
            return dg.AssetCheckResult(
                asset_key=check.key.asset_key,
                check_name=check.name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description,
            )

        failed: list[dg.AssetCheckResult] = []
        for result in concurrently(selected, evaluate, workers=CHECK_WORKERS):
            if not result.passed and result.severity == dg.AssetCheckSeverity.ERROR:
                failed.append(result)
            yield result
        if failed:
            # Dagster would fail the step naming only the checks; this failure carries what each
            # found, so the run's error (and the run-failure alert) names the row and the value.
            raise dg.Failure(
                description=f"{len(failed)} blocking check(s) failed with ERROR severity:\n"
                + "\n".join(
                    f"{r.asset_key.to_user_string()}:{r.check_name}: "  # type: ignore[union-attr]
                    + (r.description or "see the check's metadata")
                    for r in failed
                )
            )

    return _checks


DIMENSION_CHECKS = "dimension_checks"
FACT_CHECKS = "fact_checks"
# Checks evaluated at once: each is a catalog lookup, a query or a lake read (threads release the GIL).
CHECK_WORKERS = 3

star_checks: list[dg.AssetChecksDefinition] = [
    build_checks(DIMENSION_CHECKS, [s for s in WAREHOUSE_TABLES.values() if not s.is_fact]),
    build_checks(FACT_CHECKS, [s for s in WAREHOUSE_TABLES.values() if s.is_fact]),
]
