"""Bulk loading into the source tables: CSV from Polars streamed through COPY.

A fresh load (seed or reference snapshot) empties the tables, drops the foreign keys and unique
indexes, COPYs with FREEZE and then rebuilds them with the normal DDL, all in one transaction:
validating a foreign key once over the whole table is far cheaper than a trigger per row.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from totesys_assets.ddl import schema_statements
from totesys_assets.specs import SOURCE_TABLE_NAMES, SOURCE_TABLES

# Parents before children, so appends with live foreign keys always succeed.
LOAD_ORDER = (
    "address",
    "counterparty",
    "currency",
    "department",
    "design",
    "payment_type",
    "staff",
    "sales_order",
    "purchase_order",
    "transaction",
    "payment",
)
assert sorted(LOAD_ORDER) == sorted(SOURCE_TABLE_NAMES)

CHUNK_ROWS = 200_000
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.3f"


def _ident(*names: str) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def copy_frame(cur: psycopg.Cursor, table: str, frame: pl.DataFrame, *, freeze: bool = False) -> int:
    """COPY a frame whose columns are exactly the table's spec columns; returns the row count."""
    spec = SOURCE_TABLES[table]
    if frame.columns != spec.column_names:
        raise ValueError(f"{table}: frame columns {frame.columns} differ from the spec {spec.column_names}")
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv{})").format(
        sql.Identifier(table), _ident(*spec.column_names), sql.SQL(", FREEZE true" if freeze else "")
    )
    # The queued writer sends one chunk from a worker thread while Polars renders the next.
    with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
        for offset in range(0, frame.height, CHUNK_ROWS):
            buf = io.BytesIO()
            frame.slice(offset, CHUNK_ROWS).write_csv(
                buf, include_header=False, datetime_format=TIMESTAMP_FORMAT
            )
            copy.write(buf.getvalue())
    return frame.height


def sync_sequences(cur: psycopg.Cursor, tables: Mapping[str, object] | None = None) -> None:
    """Point each id sequence past the largest id, so inserts without an id keep working."""
    for table in tables or SOURCE_TABLE_NAMES:
        pk = SOURCE_TABLES[table].primary_key
        cur.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence(%s, %s), COALESCE(max({}), 0) + 1, false) FROM {}"
            ).format(sql.Identifier(pk), sql.Identifier(table)),
            (table, pk),
        )


def _drop_keys_statements() -> list[sql.Composable]:
    """Foreign keys and unique indexes as named by `totesys_assets.ddl` (rebuilt by the same DDL)."""
    out: list[sql.Composable] = []
    for spec in SOURCE_TABLES.values():
        for col in spec.foreign_keys:
            out.append(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
                    sql.Identifier(spec.name), sql.Identifier(f"{spec.name}_{col.name}_fkey")
                )
            )
    for spec in SOURCE_TABLES.values():
        for col in spec.columns:
            if col.unique:
                out.append(
                    sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{spec.name}_{col.name}_key"))
                )
    return out


def replace_all(conn: psycopg.Connection, frames: Mapping[str, pl.DataFrame]) -> dict[str, int]:
    """Replace the contents of all 11 tables with `frames` (absent tables end up empty).

    Runs inside the caller's transaction; on any error nothing changes.
    """
    unknown = set(frames) - set(SOURCE_TABLE_NAMES)
    if unknown:
        raise ValueError(f"not totesys tables: {sorted(unknown)}")
    with conn.cursor() as cur:
        cur.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cur.execute(sql.SQL("TRUNCATE {}").format(_ident(*LOAD_ORDER)))
        for statement in _drop_keys_statements():
            cur.execute(statement)
        counts = {t: copy_frame(cur, t, frames[t], freeze=True) for t in LOAD_ORDER if t in frames}
        for statement in schema_statements(SOURCE_TABLES.values(), source_style=True):
            cur.execute(statement)
        sync_sequences(cur)
        cur.execute(sql.SQL("ANALYZE {}").format(_ident(*LOAD_ORDER)))
    return counts


def append(conn: psycopg.Connection, frames: Mapping[str, pl.DataFrame]) -> dict[str, int]:
    """Append rows with every constraint live (small loads: `advance`)."""
    with conn.cursor() as cur:
        counts = {t: copy_frame(cur, t, frames[t]) for t in LOAD_ORDER if t in frames and frames[t].height}
        sync_sequences(cur, counts)
    return counts
