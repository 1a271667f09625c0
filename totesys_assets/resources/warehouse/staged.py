"""The staged load: the frames are COPYed into a temporary table, then one set-based statement
moves them in (dimensions upsert, facts append the versions not loaded yet), all in one transaction.

A large fact load drops the table's foreign keys and version indexes inside that transaction and
adds them back before COMMIT, so they are validated and built set-based; a rollback restores them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from totesys_assets.ddl import identifiers
from totesys_assets.resources.warehouse.errors import load_error
from totesys_assets.resources.warehouse.frames import FrameChunks, csv_chunks
from totesys_assets.resources.warehouse.result import LoadResult
from totesys_assets.resources.warehouse.statements import (
    append_statement,
    bulk_drop_statements,
    bulk_restore_statements,
    drop_loaded_versions_statement,
    stage_name,
    upsert_statement,
)
from totesys_assets.specs import TableSpec


def load_staged(
    conn: psycopg.Connection,
    spec: TableSpec,
    chunks: FrameChunks,
    *,
    bulk_load_min_rows: int,
    before_commit: Callable[[psycopg.Connection], None] | None,
    started: float,
) -> LoadResult:
    """Load the frames on `conn` in one transaction; any error rolls all of it back."""
    try:
        with conn.transaction():
            if spec.is_fact:
                _stage(conn, spec, chunks)
                loaded = conn.execute(drop_loaded_versions_statement(spec)).rowcount
                bulk = _use_bulk_path(conn, spec, chunks.rows - loaded, bulk_load_min_rows)
                if bulk:
                    for statement in bulk_drop_statements(spec):
                        conn.execute(statement)
                cur = conn.execute(append_statement(spec, on_conflict=not bulk))
                inserted, updated = cur.rowcount, 0
                if bulk:
                    for statement in bulk_restore_statements(spec):
                        conn.execute(statement)
            else:
                bulk = False
                _stage(conn, spec, chunks)
                counts = conn.execute(upsert_statement(spec)).fetchone()
                assert counts is not None
                inserted, updated = counts
            table_rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))
            ).fetchone()[0]  # type: ignore[index]
            if before_commit is not None:
                before_commit(conn)
    except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
        raise load_error(spec, chunks.frame, exc) from exc
    return LoadResult(
        table=spec.name,
        is_fact=spec.is_fact,
        rows=chunks.rows,
        inserted=inserted,
        updated=updated,
        unchanged=chunks.rows - inserted - updated,
        table_rows=table_rows,
        seconds=time.perf_counter() - started,
        bulk=bulk,
    )


def _stage(conn: psycopg.Connection, spec: TableSpec, chunks: FrameChunks) -> None:
    """COPY the frames into a temporary table with the target's column types (no constraints)."""
    stage = sql.Identifier(stage_name(spec))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA").format(
            stage=stage, cols=identifiers(spec.insert_columns), table=sql.Identifier(spec.name)
        )
    )
    for frame in chunks:
        _copy(conn, stage, spec, frame)
    if chunks.rows >= 10_000:
        conn.execute(sql.SQL("ANALYZE {}").format(stage))


def _copy(conn: psycopg.Connection, table: sql.Identifier, spec: TableSpec, frame: pl.DataFrame) -> None:
    """COPY the frame (CSV, streamed in chunks) into the table's insert columns."""
    copy = sql.SQL("COPY {table} ({cols}) FROM STDIN (FORMAT csv, NULL '')").format(
        table=table, cols=identifiers(spec.insert_columns)
    )
    with conn.cursor() as cur:
        with cur.copy(copy, writer=QueuedLibpqWriter(cur)) as cp:
            for chunk in csv_chunks(frame):
                cp.write(chunk)


def _use_bulk_path(conn: psycopg.Connection, spec: TableSpec, rows: int, bulk_load_min_rows: int) -> bool:
    """Set-based FK validation pays when the new rows are many and at least a tenth of the table."""
    if not spec.foreign_keys or rows < bulk_load_min_rows:
        return False
    existing = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))).fetchone()
    return rows * 10 >= existing[0]  # type: ignore[index]
