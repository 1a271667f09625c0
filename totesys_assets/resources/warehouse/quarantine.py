"""Reads and writes of the quarantine (fact versions a load set aside) and of the deletions
observed at the source, each on a connection the resource opens."""

from __future__ import annotations

from typing import Any

import polars as pl
import psycopg
from psycopg import sql

from totesys_assets.ddl import identifiers
from totesys_assets.resources.warehouse.schema import (
    DELETIONS_SCHEMA,
    DELETIONS_TABLE,
    OPEN_REJECTIONS_VIEW,
    QUARANTINE_SCHEMA,
    REJECTED_COLUMNS,
    REJECTED_TABLE,
)
from totesys_assets.specs import TableSpec


def record_rejections(conn: psycopg.Connection, spec: TableSpec, rejected: pl.DataFrame) -> int:
    """Upsert one row per rejected value of a fact's source versions; returns the rows stored."""
    columns = identifiers(REJECTED_COLUMNS)
    target = sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE)
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE _stage_rejections (fact text, source_table text, source_id integer, "
            "last_updated timestamp(3), column_name text, value text, reason text, source_row jsonb) "
            "ON COMMIT DROP"
        )
        with conn.cursor().copy(sql.SQL("COPY _stage_rejections ({}) FROM STDIN").format(columns)) as copy:
            for row in rejected.select(REJECTED_COLUMNS[1:]).iter_rows():
                copy.write_row((spec.name, *row))
        return conn.execute(
            sql.SQL(
                "INSERT INTO {target} ({cols}) SELECT {cols} FROM _stage_rejections "
                "ON CONFLICT (fact, source_id, last_updated, column_name) DO UPDATE SET "
                "value = excluded.value, reason = excluded.reason, source_row = excluded.source_row, "
                "last_seen = now()"
            ).format(target=target, cols=columns)
        ).rowcount


def record_deletions(conn: psycopg.Connection, spec: TableSpec, deletions: pl.DataFrame) -> int:
    """Insert the deletions of a fact's source rows not stored yet; returns the rows added."""
    target = sql.Identifier(DELETIONS_TABLE)
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE _stage_deletions (source_id integer, last_updated timestamp(3), "
            "observed_at timestamp(3)) ON COMMIT DROP"
        )
        with conn.cursor().copy("COPY _stage_deletions FROM STDIN") as copy:
            for row in deletions.select(list(DELETIONS_SCHEMA)).iter_rows():
                copy.write_row(row)
        return conn.execute(
            sql.SQL(
                "INSERT INTO {target} (fact, source_id, last_updated, observed_at) "
                "SELECT %s, source_id, last_updated, observed_at FROM _stage_deletions "
                "ON CONFLICT DO NOTHING"
            ).format(target=target),
            (spec.name,),
        ).rowcount


def open_rejections(
    conn: psycopg.Connection, spec: TableSpec, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """The count of a fact's open rejected versions and its first `limit` rejected values."""
    view = sql.Identifier(QUARANTINE_SCHEMA, OPEN_REJECTIONS_VIEW)
    count = conn.execute(
        sql.SQL("SELECT count(DISTINCT (source_id, last_updated)) FROM {} WHERE fact = %s").format(view),
        (spec.name,),
    ).fetchone()[0]  # type: ignore[index]
    cur = conn.execute(
        sql.SQL(
            "SELECT source_table, source_id, last_updated, column_name, value, reason "
            "FROM {} WHERE fact = %s ORDER BY last_updated, source_id, column_name LIMIT %s"
        ).format(view),
        (spec.name, limit),
    )
    names = [d.name for d in cur.description or []]
    return int(count), [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def rejected_unloaded_query(spec: TableSpec) -> sql.Composable:
    """Counts a fact's rejected versions with `last_updated` in [first_day, last_day] that the fact
    does not hold (parameters `fact`, `first_day`, `last_day`)."""
    natural_id, updated_date, updated_time, *_ = spec.natural_key
    return sql.SQL(
        "SELECT count(DISTINCT (r.source_id, r.last_updated)) FROM {rejected} r "
        "WHERE r.fact = %(fact)s AND r.last_updated >= %(first_day)s::date "
        "AND r.last_updated < %(last_day)s::date + 1 AND NOT EXISTS (SELECT 1 FROM {fact} f "
        "WHERE f.{id} = r.source_id AND f.{d} = r.last_updated::date AND f.{t} = r.last_updated::time)"
    ).format(
        rejected=sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE),
        fact=sql.Identifier(spec.name),
        id=sql.Identifier(natural_id),
        d=sql.Identifier(updated_date),
        t=sql.Identifier(updated_time),
    )
