"""The simulated "now", kept in a one-row table `_simulator_clock` in the source database.

The clock cannot be derived from the data alone: a quiet evening adds no rows, yet five-minute
advances must still move time forward. The row also remembers the seed and scale the history was
generated with, so `totesys-sim advance` continues it consistently. A database without the row
(e.g. a loaded reference snapshot) starts from its newest created_at/last_updated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from totesys_assets.specs import SOURCE_TABLE_NAMES

CLOCK_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS _simulator_clock (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    simulated_now timestamp(3) without time zone NOT NULL,
    seed bigint NOT NULL,
    scale double precision NOT NULL,
    updated_at timestamp with time zone NOT NULL DEFAULT now()
)
"""
# Serialises concurrent advances (e.g. a schedule and a test) on one source.
ADVISORY_LOCK_KEY = int.from_bytes(b"totesys", "big")


@dataclass(frozen=True)
class ClockRow:
    now: datetime
    seed: int
    scale: float


def read_clock(conn: psycopg.Connection) -> ClockRow | None:
    if conn.execute("SELECT to_regclass('_simulator_clock')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT simulated_now, seed, scale FROM _simulator_clock").fetchone()
    return ClockRow(*row) if row else None


def write_clock(conn: psycopg.Connection, now: datetime, seed: int, scale: float) -> None:
    conn.execute(CLOCK_TABLE_DDL)
    conn.execute(
        "INSERT INTO _simulator_clock (simulated_now, seed, scale) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET simulated_now = excluded.simulated_now, seed = excluded.seed, "
        "scale = excluded.scale, updated_at = now()",
        (now, seed, scale),
    )


def newest_timestamp(conn: psycopg.Connection) -> datetime | None:
    """The latest created_at or last_updated in any of the 11 tables (None when empty or absent)."""
    missing = conn.execute(
        "SELECT count(*) FROM unnest(%s::text[]) AS t(name) WHERE to_regclass(name) IS NULL",
        (SOURCE_TABLE_NAMES,),
    ).fetchone()[0]
    if missing:
        return None
    parts = [
        sql.SQL("SELECT max(greatest(created_at, last_updated)) FROM {}").format(sql.Identifier(t))
        for t in SOURCE_TABLE_NAMES
    ]
    query = sql.SQL("SELECT max(m) FROM ({}) AS t(m)").format(sql.SQL(" UNION ALL ").join(parts))
    return conn.execute(query).fetchone()[0]


def lock(conn: psycopg.Connection) -> None:
    """Hold a transaction-scoped advisory lock so two writers never interleave."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))


def reset_clock(conn: psycopg.Connection) -> None:
    """Forget the clock: the next advance starts from the newest timestamp in the data."""
    if conn.execute("SELECT to_regclass('_simulator_clock')").fetchone()[0] is not None:
        conn.execute("DELETE FROM _simulator_clock")
