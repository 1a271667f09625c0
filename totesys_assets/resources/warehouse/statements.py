"""The statements of a load: staging, upsert of dimensions, append of fact versions, serial
sequences, and dropping and restoring a fact's keys and indexes around a bulk load."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from totesys_assets.ddl import (
    foreign_key_statements,
    identifiers,
    primary_key_statements,
    version_index_statements,
)
from totesys_assets.specs import WAREHOUSE_TABLES, TableSpec

# Memory for re-building a fact's indexes after a bulk load (sorts in memory instead of on disk).
BULK_MAINTENANCE_WORK_MEM = "256MB"


def stage_name(spec: TableSpec) -> str:
    return f"_stage_{spec.name}"


def upsert_statement(spec: TableSpec) -> sql.Composable:
    pk = spec.primary_key
    cols = spec.insert_columns
    others = [c for c in cols if c != pk]
    if others:
        conflict: sql.Composable = sql.SQL(
            "DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("excluded", c)) for c in others
            ),
            old=identifiers(others, "t"),
            new=identifiers(others, "excluded"),
        )
    else:
        conflict = sql.SQL("DO NOTHING")
    return sql.SQL(
        "WITH upserted AS ("
        "INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {stage} ORDER BY {pk} "
        "ON CONFLICT ({pk}) {conflict} RETURNING (t.xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
    ).format(
        table=sql.Identifier(spec.name),
        cols=identifiers(cols),
        stage=sql.Identifier(stage_name(spec)),
        pk=sql.Identifier(pk),
        conflict=conflict,
    )


def drop_loaded_versions_statement(spec: TableSpec) -> sql.Composable:
    """Remove from staging every version the fact table already holds (its rowcount = skipped)."""
    same_version = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("f", c), sql.Identifier("s", c)) for c in spec.natural_key
    )
    return sql.SQL("DELETE FROM {stage} AS s USING {table} AS f WHERE {same_version}").format(
        stage=sql.Identifier(stage_name(spec)), table=sql.Identifier(spec.name), same_version=same_version
    )


def append_statement(spec: TableSpec, *, on_conflict: bool = True) -> sql.Composable:
    """Insert the staged new versions oldest first, so serial record ids follow time.

    ON CONFLICT DO NOTHING covers a concurrent load of the same versions committing in between.
    A bulk load goes without: it holds the table's exclusive lock and has dropped the unique
    index that ON CONFLICT needs (re-creating it re-checks uniqueness before COMMIT).
    """
    natural_id, updated_date, updated_time, *_ = spec.natural_key
    return sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ORDER BY {order} {conflict}"
    ).format(
        conflict=sql.SQL("ON CONFLICT ({}) DO NOTHING").format(identifiers(spec.natural_key))
        if on_conflict
        else sql.SQL(""),
        table=sql.Identifier(spec.name),
        cols=identifiers(spec.insert_columns),
        stage=sql.Identifier(stage_name(spec)),
        order=identifiers([updated_date, updated_time, "captured_at", natural_id]),
    )


def serial_sequence(table: str, column: str) -> sql.Composable:
    return sql.SQL("pg_get_serial_sequence({}, {})").format(
        sql.Literal(sql.Identifier(table).as_string()), sql.Literal(column)
    )


def sequence_state_statement(sequence: str) -> str:
    """`last_value, is_called` of a sequence named as `pg_get_serial_sequence` returns it (quoted)."""
    return sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence)).as_string()


def advance_serial_statement(table: str, column: str, last: int) -> str:
    """Move a serial column's sequence to `last` (the ids up to it are taken)."""
    return (
        sql.SQL("SELECT setval({seq}, {last})")
        .format(seq=serial_sequence(table, column), last=sql.Literal(int(last)))
        .as_string()
    )


def _foreign_key_drop_statements(spec: TableSpec) -> list[sql.Composable]:
    """Drop a fact's foreign keys (each takes an ACCESS EXCLUSIVE lock on the dimension it references)."""
    table = sql.Identifier(spec.name)
    return [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            table, sql.Identifier(f"{spec.name}_{c.name}_fkey")
        )
        for c in spec.foreign_keys
    ]


def _foreign_key_restore_statements(spec: TableSpec) -> list[sql.Composable]:
    """Add a fact's missing foreign keys back, each validated by one set-based scan.

    The dimensions are locked first, in name order, as adding a key would lock them one by one:
    loads that restore keys at the same time then queue instead of deadlocking.
    """
    dimensions = sorted({c.references.split(".")[0] for c in spec.foreign_keys})  # type: ignore[union-attr]
    lock = sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(identifiers(dimensions))
    return [lock, *foreign_key_statements(spec, source_style=False)]


def bulk_drop_statements(spec: TableSpec) -> list[sql.Composable]:
    """Lock a fact table and drop its foreign keys and version indexes (bulk loads).

    Dropping a foreign key locks the dimension it references (ACCESS EXCLUSIVE) until COMMIT; the
    dimensions are locked first, in name order, so that two loads doing this queue instead of
    deadlocking.
    """
    lock = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE")
    dimensions = sorted({c.references.split(".")[0] for c in spec.foreign_keys})  # type: ignore[union-attr]
    return [
        lock.format(sql.Identifier(spec.name)),
        lock.format(identifiers(dimensions)),
        *_foreign_key_drop_statements(spec),
        *version_index_statements(spec)[0],
    ]


def referencing_facts(spec: TableSpec) -> list[TableSpec]:
    """The fact tables with a foreign key to this dimension."""
    return [
        f
        for f in WAREHOUSE_TABLES.values()
        if f.is_fact and any(c.references.split(".")[0] == spec.name for c in f.foreign_keys)  # type: ignore[union-attr]
    ]


def referencing_key_drop_statements(spec: TableSpec, facts: Sequence[TableSpec]) -> list[sql.Composable]:
    """Drop the facts' foreign keys to a dimension, then the dimension's primary key."""
    out = [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            sql.Identifier(f.name), sql.Identifier(f"{f.name}_{c.name}_fkey")
        )
        for f in facts
        for c in f.foreign_keys
        if c.references.split(".")[0] == spec.name  # type: ignore[union-attr]
    ]
    return out + primary_key_statements(spec)[0]


def referencing_key_restore_statements(spec: TableSpec, facts: Sequence[TableSpec]) -> list[sql.Composable]:
    memory = sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BULK_MAINTENANCE_WORK_MEM))
    restore: list[sql.Composable] = [memory, *primary_key_statements(spec)[1]]
    for f in facts:
        restore += foreign_key_statements(f, source_style=False, referencing=spec.name)
    return restore


def bulk_restore_statements(spec: TableSpec) -> list[sql.Composable]:
    """Build the version indexes (one sort each) and re-validate the foreign keys set-based."""
    memory = sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BULK_MAINTENANCE_WORK_MEM))
    return [memory, *version_index_statements(spec)[1], *_foreign_key_restore_statements(spec)]
