"""kill -9 of real run processes: what is stored afterwards, and what a re-run makes of it.

The runs are `dagster asset materialize` processes (the README's headless backfill); the moment
to kill is found from the database side (`pg_locks`, `pg_stat_activity`), not by a hook in the code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.simulator import Simulator
from totesys_assets.specs import WAREHOUSE_TABLES
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.helpers import materialize_range

ALL = [*raw_assets, *star_assets, *star_checks]
# Five weeks at x100: every fact but the purchase orders is above bulk_load_min_rows (50,000), so
# the first backfill takes the bulk path that drops and re-adds the facts' keys.
FIRST, LAST = "2024-10-01", "2024-11-08"
EVERY_CONSTRAINT = (
    "SELECT conrelid::regclass::text, conname, contype, convalidated, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
)
EVERY_INDEX = (
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
)
FACT_KEYS = (
    "SELECT conrelid::regclass::text, count(*) FILTER (WHERE convalidated) FROM pg_constraint "
    "WHERE contype = 'f' AND conrelid::regclass::text LIKE 'fact%%' GROUP BY 1 ORDER BY 1"
)
FACT_ROWS = " UNION ALL ".join(
    f"SELECT '{name}', count(*) FROM {name}"  # noqa: S608
    for name in ("fact_payment", "fact_purchase_order", "fact_sales_order")
)
# A load inside its critical section: it holds a dimension exclusively (taken just before it drops
# the fact's keys) and runs the statements after that lock (drops, the move, rebuilds, re-adds).
IN_CRITICAL_SECTION = """
SELECT a.pid, a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.relation = 'dim_date'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted
  AND a.state = 'active' AND a.query NOT LIKE 'LOCK TABLE%%' AND a.pid <> pg_backend_pid()
"""


def fetch(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type]


def _cli(select: str, first: str = FIRST, last: str = LAST) -> list[str]:
    """The README's headless backfill of one group over a partition range."""
    return [
        sys.executable, "-m", "dagster", "asset", "materialize", "-m", "totesys_assets.definitions",
        "--select", select, "--partition-range", f"{first}...{last}",
    ]  # fmt: skip


def _env(tmp_path: Path, warehouse: str) -> dict[str, str]:
    home = tmp_path / f"dagster_{abs(hash(warehouse))}"
    home.mkdir(exist_ok=True)
    return {**os.environ, "WAREHOUSE_DB_URL": warehouse, "DAGSTER_HOME": str(home)}


def _warehouse_rows(url: str) -> dict[str, list[tuple]]:
    """Every table's rows in key order (facts in record-id order)."""
    out = {}
    for name, spec in WAREHOUSE_TABLES.items():
        out[name] = fetch(url, f'SELECT * FROM "{name}" ORDER BY "{spec.primary_key}"')  # noqa: S608
    return out


def _no_other_backends(url: str, timeout: float = 60) -> None:
    """Wait until the killed run's connections are gone (PostgreSQL aborts their transactions)."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    while fetch(url, query)[0][0]:
        assert time.monotonic() < deadline, fetch(url, "SELECT pid, state, query FROM pg_stat_activity")
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_inside_the_first_facts_backfill_leaves_every_key_and_the_rerun_converges(
    pg, tmp_path, monkeypatch
):
    source = pg.new_db("crash_src")
    sim = Simulator(source, seed=7, scale=100)
    sim.create_schema()
    sim.seed_history(start=datetime(2024, 10, 1, 8), end=datetime(2024, 11, 8, 18))
    crashed, clean = pg.new_db("crash_wh"), pg.new_db("clean_wh")
    monkeypatch.setenv("TOTESYS_DB_URL", source)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("TOTESYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WAREHOUSE_DB_URL", crashed)
    assert materialize_range(
        ALL, build_resources(), FIRST, LAST, selection=dg.AssetSelection.groups("raw")
    ).success
    for warehouse in (crashed, clean):
        monkeypatch.setenv("WAREHOUSE_DB_URL", warehouse)
        assert dg.materialize(
            ALL, resources=build_resources(), selection=dg.AssetSelection.groups("dimensions")
        ).success
    keys = fetch(crashed, FACT_KEYS)
    assert keys == [("fact_payment", 7), ("fact_purchase_order", 8), ("fact_sales_order", 9)]
    constraints, indexes = fetch(crashed, EVERY_CONSTRAINT), fetch(crashed, EVERY_INDEX)

    # The first facts backfill, killed (SIGKILL) while a load is between dropping its fact's keys
    # and COMMIT.
    run = subprocess.Popen(
        _cli("group:facts"), env=_env(tmp_path, crashed),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    caught = []
    try:
        deadline = time.monotonic() + 240
        while not caught and run.poll() is None and time.monotonic() < deadline:
            caught = fetch(crashed, IN_CRITICAL_SECTION)
            if not caught:
                time.sleep(0.005)
        if caught:
            # what anyone else sees meanwhile: every key (the drops are not committed)
            seen_meanwhile = fetch(crashed, FACT_KEYS)
            os.killpg(run.pid, signal.SIGKILL)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)
    assert caught, f"the run never reached a load's critical section: {run.stderr.read()[-3000:]}"  # type: ignore[union-attr]
    assert run.returncode == -signal.SIGKILL
    assert seen_meanwhile == keys
    _no_other_backends(crashed)
    after_kill = {t: n for t, n in fetch(crashed, FACT_ROWS)}

    # Afterwards: every foreign key of every fact, validated; every index; each fact empty or whole.
    assert fetch(crashed, FACT_KEYS) == keys, caught
    assert fetch(crashed, EVERY_CONSTRAINT) == constraints
    assert fetch(crashed, EVERY_INDEX) == indexes
    assert not fetch(crashed, "SELECT relname FROM pg_class WHERE relname LIKE '\\_stage\\_%' ")

    # The re-run converges to what an uninterrupted backfill builds, record ids included.
    for warehouse in (crashed, clean):
        done = subprocess.run(
            _cli("group:facts"), env=_env(tmp_path, warehouse),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    assert fetch(crashed, EVERY_CONSTRAINT) == fetch(clean, EVERY_CONSTRAINT) == constraints
    assert fetch(crashed, EVERY_INDEX) == fetch(clean, EVERY_INDEX)
    got, expected = _warehouse_rows(crashed), _warehouse_rows(clean)
    # each fact was empty or whole after the kill (a load commits all of its rows or none)
    assert all(after_kill[t] in (0, len(expected[t])) for t in after_kill), after_kill
    assert 0 in after_kill.values()  # (the killed load's fact, at least)
    assert {t: len(r) for t, r in got.items()} == {t: len(r) for t, r in expected.items()}
    assert len(expected["fact_payment"]) > 50_000 and len(expected["fact_sales_order"]) > 50_000
    assert got == expected


# --- the raw backfill ---------------------------------------------------------------------------


def _lake_objects(kind: str, lake_url: str, s3) -> dict[str, bytes]:
    """Every object of the raw zone (local: visible files only; temporary files are hidden)."""
    if kind == "s3":
        bucket, prefix = lake_url[len("s3://") :].split("/", 1)
        keys = s3.keys(bucket, f"{prefix}/raw/")
        return {k.split("/", 1)[1]: s3.client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
    root = Path(lake_url)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in (root / "raw").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "s3"])
def test_kill_9_in_the_middle_of_a_raw_backfill_leaves_whole_objects_and_the_rerun_converges(
    pg, s3, tmp_path, kind
):
    import io

    import polars as pl

    from totesys_assets.specs import SOURCE_TABLES
    from totesys_assets_tests.helpers import frame_rows, source_rows

    source = pg.new_db("raw_crash_src")
    sim = Simulator(source, seed=7, scale=10)
    sim.create_schema()
    sim.seed_history(start=datetime(2024, 10, 26, 8), end=datetime(2024, 11, 8, 18))
    raw_cli = _cli("group:raw", "2024-10-26", LAST)
    lake_url = f"s3://{s3.new_bucket()}/totes" if kind == "s3" else str(tmp_path / "lake")
    env = {
        **_env(tmp_path, pg.new_db("raw_crash_wh")),
        "TOTESYS_DB_URL": source,
        "TOTESYS_LAKE_URL": lake_url,
        "TOTESYS_HOME": str(tmp_path / "home"),
    }
    run = subprocess.Popen(
        raw_cli,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while (
            run.poll() is None and time.monotonic() < deadline and len(_lake_objects(kind, lake_url, s3)) < 20
        ):
            time.sleep(0.01)
        assert run.poll() is None, f"the run ended before it was killed: {run.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(30)

    by_day: dict[tuple[str, str], list[tuple]] = {}
    for table, spec in SOURCE_TABLES.items():
        for row in source_rows(source, table):
            day = row[spec.column_names.index("last_updated")].date().isoformat()
            by_day.setdefault((table, day), []).append(row)

    def day_rows(table: str, day: str) -> list[tuple]:
        return by_day[(table, day)]

    # Every object there is whole: it reads, and holds exactly its day's source rows.
    killed = _lake_objects(kind, lake_url, s3)
    assert killed, "nothing was written before the kill"
    for key, data in killed.items():
        _, table, name = key.split("/")
        frame = pl.read_parquet(io.BytesIO(data))
        assert frame_rows(frame, table) == day_rows(table, name.removesuffix(".parquet")), key

    # The re-run completes the lake: every day of every table, as in the source.
    done = subprocess.run(raw_cli, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lake = _lake_objects(kind, lake_url, s3)
    assert {(k.split("/")[1], k.split("/")[2].removesuffix(".parquet")) for k in lake} == set(by_day)
    for key, data in lake.items():
        _, table, name = key.split("/")
        assert frame_rows(pl.read_parquet(io.BytesIO(data)), table) == day_rows(
            table, name.removesuffix(".parquet")
        )
        if key in killed:
            assert data == killed[key]  # a day already whole was not rewritten
