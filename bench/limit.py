"""The physical limit on the same databases: bare ADBC (libpq binary COPY) extract and load.

* extract: `SELECT *` of each of the 11 source tables into Arrow over one ADBC connection
  (binary COPY under the hood): no casts, no schema checks, no Polars.
* load: the same Arrow tables (the same row count) bulk-ingested with ADBC (binary COPY) into
  fresh, unindexed, unconstrained tables of a scratch database.

Together they are the fastest this machine moves the source's rows from one PostgreSQL database
into another; the pipeline's stages are compared with them. Best of `repeats` (warm caches).
"""

from __future__ import annotations

import time
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import psycopg
from psycopg import sql

from totesys_assets.specs import SOURCE_TABLE_NAMES


def _extract(source_url: str) -> tuple[float, dict[str, Any]]:
    tables = {}
    started = time.perf_counter()
    with adbc.connect(source_url) as conn, conn.cursor() as cur:
        for name in SOURCE_TABLE_NAMES:
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name)).as_string())
            tables[name] = cur.fetch_arrow_table()
    return time.perf_counter() - started, tables


def _drop(scratch_url: str, names: list[str]) -> None:
    with psycopg.connect(scratch_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def _load(scratch_url: str, tables: dict[str, Any]) -> float:
    names = [f"limit_{t}" for t in tables]
    _drop(scratch_url, names)
    started = time.perf_counter()
    with adbc.connect(scratch_url) as conn:
        with conn.cursor() as cur:
            for name, table in tables.items():
                cur.adbc_ingest(f"limit_{name}", table, mode="create")
        conn.commit()
    seconds = time.perf_counter() - started
    _drop(scratch_url, names)
    return seconds


def measure_limit(source_url: str, scratch_url: str, repeats: int = 2) -> dict[str, Any]:
    """{'extract': {...}, 'load': {...}} with rows, seconds (best of `repeats`) and bytes."""
    extract_times, load_times = [], []
    tables: dict[str, Any] = {}
    for _ in range(max(1, repeats)):
        seconds, tables = _extract(source_url)
        extract_times.append(seconds)
        load_times.append(_load(scratch_url, tables))
    rows = sum(t.num_rows for t in tables.values())
    nbytes = sum(t.nbytes for t in tables.values())
    common = {"rows": rows, "arrow_bytes": nbytes, "repeats": len(extract_times)}
    return {
        "extract": {
            **common,
            "seconds": min(extract_times),
            "all_seconds": [round(s, 3) for s in extract_times],
            "how": "ADBC SELECT * per table -> Arrow (libpq binary COPY), one connection",
        },
        "load": {
            **common,
            "seconds": min(load_times),
            "all_seconds": [round(s, 3) for s in load_times],
            "how": "ADBC adbc_ingest (binary COPY) of the same Arrow tables into new unindexed tables",
        },
    }
