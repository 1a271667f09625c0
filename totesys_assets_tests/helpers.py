"""Test helpers shared by several test modules (real Dagster runs, independent lake/source reads)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence

import dagster as dg
import polars as pl
import psycopg
from psycopg import sql

from totesys_assets.partitions import partition_tags
from totesys_assets.specs import SOURCE_TABLES
from totesys_assets_tests.conftest import REPO_ROOT


def materialize_range(
    assets: Sequence, resources: dict, start: str, end: str, **kwargs
) -> dg.ExecuteInProcessResult:
    """One single run over a partition range, as a `BackfillPolicy.single_run()` backfill does."""
    tags = {**kwargs.pop("tags", {}), **partition_tags(start, end)}
    return dg.materialize(assets, resources=resources, tags=tags, **kwargs)


def raw_materializations(result: dg.ExecuteInProcessResult, table: str) -> list[dg.AssetMaterialization]:
    """A run's materialisations of one raw table (all raw tables share the `raw_extract` step)."""
    from totesys_assets.raw.assets import RAW_STEP, raw_asset_key

    key = raw_asset_key(table)
    return [m for m in result.asset_materializations_for_node(RAW_STEP) if m.asset_key == key]


def fact_materializations(result: dg.ExecuteInProcessResult, fact: str) -> list[dg.AssetMaterialization]:
    """A run's materialisations of one fact (the three facts share the `facts_load` step)."""
    from totesys_assets.star.assets import FACTS_STEP

    key = dg.AssetKey(fact)
    return [m for m in result.asset_materializations_for_node(FACTS_STEP) if m.asset_key == key]


def source_rows(url: str, table: str, where: str = "") -> list[tuple]:
    """A table's rows straight from PostgreSQL (psycopg types), sorted by pk and last_updated."""
    spec = SOURCE_TABLES[table]
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY {}, last_updated").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in spec.column_names),
        sql.Identifier(table),
        sql.SQL(where),
        sql.Identifier(spec.primary_key),
    )
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def s3_objects(client, bucket: str, prefix: str) -> dict[str, pl.DataFrame]:
    """Every Parquet object under a prefix, read back independently of the project's lake code."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    out = {}
    for page in pages:
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = pl.read_parquet(io.BytesIO(body))
    return out


def frame_rows(frame: pl.DataFrame, table: str) -> list[tuple]:
    spec = SOURCE_TABLES[table]
    return frame.sort([spec.primary_key, "last_updated"]).select(spec.column_names).rows()


def failure_text(results: dg.ExecuteInProcessResult | Sequence[dg.ExecuteInProcessResult]) -> str:
    """All error text of failed steps (with causes, and attempts the retry policy retried)."""
    results = [results] if isinstance(results, dg.ExecuteInProcessResult) else results
    errors = []
    for result in results:
        for event in result.all_events:
            if event.event_type == dg.DagsterEventType.STEP_FAILURE:
                errors.append(event.step_failure_data.error)
            elif event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY:
                errors.append(event.event_specific_data.error)
    assert errors, "expected a failed step"
    return "\n".join(err.to_string() for err in errors if err is not None)


def python_in_fresh_env(code: str, **env: str) -> subprocess.CompletedProcess:
    """`python -c code` in the repository with no TOTESYS_/WAREHOUSE_ setting but `env`: the
    definitions read their configuration at import, so each configuration needs its own process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_"))}
    return subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, cwd=REPO_ROOT, capture_output=True, text=True
    )


def last_json_line(done: subprocess.CompletedProcess):
    """The JSON a `python_in_fresh_env` probe printed last (failing with its stderr if it failed)."""
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
