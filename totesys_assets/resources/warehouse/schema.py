"""The warehouse's own DDL beside the star schemas (the `*_current` views, the deletions table,
the quarantine) and the check that live tables match the specs."""

from __future__ import annotations

import hashlib

import polars as pl
import psycopg
from psycopg import sql

from totesys_assets.ddl import identifiers, schema_statements
from totesys_assets.resources.warehouse.errors import WarehouseSchemaError
from totesys_assets.specs import WAREHOUSE_TABLES, Kind, TableSpec

# One advisory lock key for the warehouse DDL (stable across processes and releases).
DDL_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"totesys_assets.warehouse.ddl").digest()[:8], "big", signed=True
)


def current_view_name(spec: TableSpec) -> str:
    return f"{spec.name}_current"


CURRENT_VIEWS: dict[str, TableSpec] = {
    current_view_name(s): s for s in WAREHOUSE_TABLES.values() if s.is_fact
}


# Rows deleted at the source: one row per tombstone the lake captured (which fact, which source
# row, its last version's last_updated, when the deletion was observed).
DELETIONS_TABLE = "fact_deletions"
DELETIONS_SCHEMA = pl.Schema(
    {"source_id": pl.Int32(), "last_updated": pl.Datetime("ms"), "observed_at": pl.Datetime("ms")}
)


def deletions_statement() -> sql.Composable:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (fact text NOT NULL, source_id integer NOT NULL, "
        "last_updated timestamp(3) NOT NULL, observed_at timestamp(3) NOT NULL, "
        "PRIMARY KEY (fact, source_id, observed_at))"
    ).format(sql.Identifier(DELETIONS_TABLE))


def current_view_statement(spec: TableSpec) -> sql.Composable:
    """The latest captured version of every source row of a fact (the source's state at the last
    capture, even when its last_updated went backwards; ties by last_updated, then record id);
    rows whose deletion was observed after that version was captured are left out
    (`fact_deletions` keeps when)."""
    natural_id, updated_date, updated_time, *_ = spec.natural_key
    return sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {ccols} FROM (SELECT DISTINCT ON ({id}) {cols} FROM {table} "
        "ORDER BY {id}, captured_at DESC, {d} DESC, {t} DESC, {pk} DESC) c WHERE NOT EXISTS "
        "(SELECT 1 FROM {deletions} x WHERE x.fact = {name} AND x.source_id = c.{id} "
        "AND x.observed_at >= c.captured_at)"
    ).format(
        view=sql.Identifier(current_view_name(spec)),
        id=sql.Identifier(natural_id),
        cols=identifiers(spec.column_names),
        ccols=identifiers(spec.column_names, "c"),
        table=sql.Identifier(spec.name),
        d=sql.Identifier(updated_date),
        t=sql.Identifier(updated_time),
        pk=sql.Identifier(spec.primary_key),
        deletions=sql.Identifier(DELETIONS_TABLE),
        name=sql.Literal(spec.name),
    )


# Fact versions a load set aside (`split_fact`), in a schema of their own beside the star schema.
QUARANTINE_SCHEMA = "quarantine"
REJECTED_TABLE = "rejected_versions"
OPEN_REJECTIONS_VIEW = "open_rejections"
REJECTED_COLUMNS = [
    "fact",
    "source_table",
    "source_id",
    "last_updated",
    "column_name",
    "value",
    "reason",
    "source_row",
]


def quarantine_statements() -> list[sql.Composable]:
    """The quarantine: one row per rejected value of a fact's source version, and the view of those
    not yet superseded by a loaded version of the same source row (or loaded themselves since)."""
    schema = sql.Identifier(QUARANTINE_SCHEMA)
    table = sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE)
    superseded = sql.SQL(" OR ").join(
        sql.SQL(
            "(r.fact = {name} AND EXISTS (SELECT 1 FROM {fact} f WHERE f.{id} = r.source_id "
            "AND (f.{d}, f.{t}) >= (r.last_updated::date, r.last_updated::time)))"
        ).format(
            name=sql.Literal(spec.name),
            fact=sql.Identifier(spec.name),
            id=sql.Identifier(spec.natural_key[0]),
            d=sql.Identifier(spec.natural_key[1]),
            t=sql.Identifier(spec.natural_key[2]),
        )
        for spec in WAREHOUSE_TABLES.values()
        if spec.is_fact
    )
    return [
        # (CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the schema exists)
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {name}) "
            "THEN CREATE SCHEMA {schema}; END IF; END $$"
        ).format(name=sql.Literal(QUARANTINE_SCHEMA), schema=schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (fact text NOT NULL, source_table text NOT NULL, "
            "source_id integer NOT NULL, last_updated timestamp(3) NOT NULL, column_name text NOT NULL, "
            "value text, reason text NOT NULL, source_row jsonb NOT NULL, "
            "first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (fact, source_id, last_updated, column_name))"
        ).format(table),
        sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT r.* FROM {} r WHERE NOT ({})").format(
            sql.Identifier(QUARANTINE_SCHEMA, OPEN_REJECTIONS_VIEW), table, superseded
        ),
    ]


def warehouse_statements() -> list[sql.Composable]:
    """The whole warehouse DDL: tables, keys, foreign keys, the `*_current` views and the quarantine."""
    specs = list(WAREHOUSE_TABLES.values())
    out = schema_statements(specs, source_style=False)
    out.append(deletions_statement())
    out.extend(current_view_statement(s) for s in specs if s.is_fact)
    out.extend(quarantine_statements())
    return out


def _expected_pg_type(col_kind: Kind, pg_type: str) -> str:
    return "integer" if col_kind is Kind.SERIAL else pg_type


def check_schema(conn: psycopg.Connection) -> None:
    """Raise `WarehouseSchemaError` for a warehouse table whose columns differ from its spec."""
    rows = conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        (list(WAREHOUSE_TABLES),),
    ).fetchall()
    live: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, column, pg_type, not_null in rows:
        live.setdefault(table, {})[column] = (pg_type, not_null)
    for spec in WAREHOUSE_TABLES.values():
        columns = live.get(spec.name, {})
        for col in spec.columns:
            expected = (_expected_pg_type(col.kind, col.pg_type), not col.nullable)
            found = columns.get(col.name)
            if found is None:
                raise WarehouseSchemaError(
                    f"warehouse table {spec.name!r} exists without column {col.name!r} "
                    f"({col.pg_type}); migrate or drop the table"
                )
            if found != expected:
                raise WarehouseSchemaError(
                    f"warehouse column {spec.name}.{col.name} is {found[0]}"
                    f"{' NOT NULL' if found[1] else ' NULL'}, the spec says {expected[0]}"
                    f"{' NOT NULL' if expected[1] else ' NULL'}"
                )
        extra = sorted(set(columns) - set(spec.column_names))
        if extra:
            raise WarehouseSchemaError(
                f"warehouse table {spec.name!r} has columns the spec does not know: {', '.join(extra)}"
            )
