"""The first load of large frames into an empty table: ADBC's binary COPY of each sorted Arrow
frame, with the table's keys and indexes dropped and rebuilt inside the same transaction.

A fact is COPYed into a temporary stage before any dimension is locked, so two first fact loads
overlap; only moving the rows in and rebuilding the keys takes turns. A crash rolls all of it back.
"""

from __future__ import annotations

import time
from typing import Any

import adbc_driver_manager
import polars as pl
from psycopg import sql

from totesys_assets.ddl import identifiers, primary_key_statements
from totesys_assets.resources.warehouse.errors import AdbcDiagnostics, connect_adbc, load_error
from totesys_assets.resources.warehouse.frames import FrameChunks
from totesys_assets.resources.warehouse.result import LoadResult
from totesys_assets.resources.warehouse.statements import (
    advance_serial_statement,
    bulk_drop_statements,
    bulk_restore_statements,
    referencing_facts,
    referencing_key_drop_statements,
    referencing_key_restore_statements,
    sequence_state_statement,
    serial_sequence,
    stage_name,
)
from totesys_assets.specs import Kind, TableSpec


def first_load(url: str, spec: TableSpec, chunks: FrameChunks, started: float) -> LoadResult | None:
    """Load the frames into their empty table in one transaction; None, before reading any of
    them, if the table is not empty (checked again under the exclusive lock): the caller then
    takes the staged path.

    Each frame goes in sorted: facts oldest version first (serial record ids follow time, and a
    fact's frames come oldest days first), dimensions in key order; a dimension's primary key is
    rebuilt too when the facts referencing it are empty.
    """
    table = sql.Identifier(spec.name)
    is_empty = sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table).as_string()
    order = (
        [*spec.natural_key[1:3], "captured_at", spec.natural_key[0]] if spec.is_fact else [spec.primary_key]
    )
    conn = connect_adbc(url)
    with conn, conn.cursor() as cur:

        def execute(statement: sql.Composable | str) -> Any:
            cur.execute(statement if isinstance(statement, str) else statement.as_string())
            return cur.fetchone() if cur.description else None

        try:
            if not execute(is_empty)[0]:
                conn.rollback()
                return None
            execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            if not execute(is_empty)[0]:
                conn.rollback()
                return None
            # A dimension's key is rebuilt too when the facts referencing it are empty (their
            # foreign keys to it are then re-added without a row to check).
            referencing = [] if spec.is_fact else referencing_facts(spec)
            for fact in referencing:
                execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(fact.name)))
            rebuild_key = bool(referencing) and all(
                execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(f.name)))[0]
                for f in referencing
            )
            if rebuild_key:
                for statement in referencing_key_drop_statements(spec, referencing):
                    execute(statement)
            serials = [c.name for c in spec.columns if c.kind is Kind.SERIAL]
            serial = serials[0] if serials else None
            if serial is not None:
                # The serial ids are sent with the rows: COPY then skips a nextval() per row. The
                # table is locked, so they are exactly what the database would have assigned in
                # this order; the sequence moves past them as the load's last statement (a
                # sequence ignores ROLLBACK: moved first, a load that died would leave a gap that
                # shifts every id of the next one).
                sequence = execute(sql.SQL("SELECT {}").format(serial_sequence(spec.name, serial)))[0]
                last, called = execute(sequence_state_statement(sequence))
                first = int(last) + 1 if called else int(last)
            target = stage_name(spec) if spec.is_fact else spec.name
            if spec.is_fact:
                execute(
                    sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(
                        sql.Identifier(target), table
                    )
                )
            rows = 0
            for chunk in chunks:
                frame = chunk.sort(order).select(spec.insert_columns)
                if serial is not None:
                    ids = pl.int_range(first + rows, first + rows + frame.height, dtype=pl.Int32, eager=True)
                    frame = frame.select(ids.alias(serial), *spec.insert_columns)
                if frame.height:
                    cur.adbc_ingest(target, frame.to_arrow(), mode="append", temporary=spec.is_fact)
                rows += frame.height
            if spec.is_fact:
                # From here to COMMIT the dimensions are locked. Nothing references a fact's
                # key, so it too is rebuilt.
                for statement in [*bulk_drop_statements(spec), *primary_key_statements(spec)[0]]:
                    execute(statement)
                columns = identifiers([*([serial] if serial else []), *spec.insert_columns])
                execute(
                    sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                        table, columns, columns, sql.Identifier(target)
                    )
                )  # (a temporary table is scanned in the order it was written: oldest first)
                restore = bulk_restore_statements(spec)  # SET maintenance_work_mem first
                for statement in [restore[0], *primary_key_statements(spec)[1], *restore[1:]]:
                    execute(statement)
            if rebuild_key:
                for statement in referencing_key_restore_statements(spec, referencing):
                    execute(statement)
            if serial is not None and rows:
                execute(advance_serial_statement(spec.name, serial, first + rows - 1))
            conn.commit()
            table_rows = rows  # the table was empty under the exclusive lock
        except adbc_driver_manager.Error as exc:
            conn.rollback()
            if exc.sqlstate and exc.sqlstate[:2] in ("22", "23"):
                raise load_error(spec, chunks.frame, AdbcDiagnostics(exc)) from exc  # type: ignore[arg-type]
            raise
    return LoadResult(
        table=spec.name,
        is_fact=spec.is_fact,
        rows=rows,
        inserted=rows,
        updated=0,
        unchanged=0,
        table_rows=table_rows,
        seconds=time.perf_counter() - started,
        bulk=True,
    )
