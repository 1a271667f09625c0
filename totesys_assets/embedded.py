"""The zero-configuration default: an embedded PostgreSQL (pgserver) under TOTESYS_HOME.

When TOTESYS_DB_URL / WAREHOUSE_DB_URL are unset, the resources call `source_url()` /
`warehouse_url()`. The first call starts (or reuses) one PostgreSQL cluster in
`$TOTESYS_HOME/pg`, creates the `totesys` database with the real schema seeded by the
simulator, and an empty `warehouse` database. Several Dagster processes (webserver, daemon,
code server, run workers) may race here, so the work happens under an exclusive file lock.

The cluster keeps running after `dagster dev` exits, like any local database service; stop
it with `python -m totesys_assets.embedded stop`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from totesys_assets.settings import (
    ENV_LAKE_URL,
    ENV_SOURCE_URL,
    ENV_WAREHOUSE_URL,
    require_demo_allowed,
    totesys_home,
)

log = logging.getLogger(__name__)
# pgserver asks platformdirs for a runtime dir it does not use; without XDG_RUNTIME_DIR (containers,
# CI, daemons) that warns on every import.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

SOURCE_DB = "totesys"
WAREHOUSE_DB = "warehouse"
DAGSTER_DB = "dagster"  # the quick start's Dagster instance storage (totesys-dev)
# pgserver gives `pg_ctl start` 10 s; on a loaded 2-core machine (dagster dev starting its webserver,
# daemon and code server at once) a first start can take longer. We keep retrying until this deadline.
START_TIMEOUT_S = 120.0


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "embedded.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _server_uri(home: Path) -> str:
    """Start (or reuse) the cluster, retrying a start that pgserver gave up on too early.

    When `pg_ctl start` outlives pgserver's 10 s timeout the postmaster keeps starting, but pgserver
    raises and leaves a half-made handle in its per-process cache. We drop that handle and ask
    again: the next attempt finds the postmaster and waits for it to be ready.
    """
    import pgserver
    from pgserver.postgres_server import PostgresServer

    pgdata = (home / "pg").resolve()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            return pgserver.get_server(pgdata, cleanup_mode=None).get_uri()
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            stale = PostgresServer._instances.pop(pgdata, None)
            if stale is not None:
                atexit.unregister(stale._cleanup)
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"the embedded PostgreSQL in {pgdata} did not start within {START_TIMEOUT_S:.0f} s: {exc!r}"
                ) from exc
            log.warning("the embedded PostgreSQL in %s is not ready yet (%r); retrying", pgdata, exc)
            time.sleep(1.0)


def _db_uri(base_uri: str, dbname: str) -> str:
    return base_uri.replace("/postgres?", f"/{dbname}?", 1)


def _ensure_database(base_uri: str, dbname: str) -> bool:
    """Create the database if missing; True when it was created now."""
    with psycopg.connect(base_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return True


@functools.cache
def _ensure(home: Path) -> tuple[str, str]:
    with _locked(home):
        base = _server_uri(home)
        source, warehouse = _db_uri(base, SOURCE_DB), _db_uri(base, WAREHOUSE_DB)
        _ensure_database(base, SOURCE_DB)
        from totesys_assets.simulator import Simulator

        sim = Simulator(source)
        if sim.now() is None:  # an empty source: first start, or a seed that was interrupted
            log.info("seeding the embedded totesys source in %s (first start)", home)
            sim.create_schema()
            sim.seed_history(replace=True)
        _ensure_database(base, WAREHOUSE_DB)
        return source, warehouse


def source_url() -> str:
    """URL of the embedded, seeded `totesys` database (started on first use)."""
    require_demo_allowed(ENV_SOURCE_URL)
    return _ensure(totesys_home())[0]


def warehouse_url() -> str:
    """URL of the embedded `warehouse` database (started on first use)."""
    require_demo_allowed(ENV_WAREHOUSE_URL)
    return _ensure(totesys_home())[1]


def dagster_storage_url() -> str:
    """psycopg2 URL of the embedded `dagster` database (Dagster's run, event and schedule storage)."""
    home = totesys_home()
    with _locked(home):
        base = _server_uri(home)
        _ensure_database(base, DAGSTER_DB)
    # dagster-postgres under SQLAlchemy 2.1 needs the psycopg2 driver named in the scheme.
    return "postgresql+psycopg2://" + _db_uri(base, DAGSTER_DB).split("://", 1)[1]


def running_pid(pgdata: Path) -> int | None:
    """The postmaster's pid when a server runs on `pgdata` (read from postmaster.pid; starts nothing)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def status() -> None:
    """Say whether the embedded PostgreSQL runs and where everything lives; starts nothing."""
    home = totesys_home()
    pgdata = home / "pg"
    pid = running_pid(pgdata)
    print(f"TOTESYS_HOME={home}")
    if pid is None:
        state = "not initialised" if not (pgdata / "PG_VERSION").exists() else "stopped"
        print(f"embedded PostgreSQL: {state} ({pgdata}); the first run, tick or totesys-dev starts it")
    else:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        socket_dir = lines[4] if len(lines) > 4 and lines[4] else pgdata  # postmaster.pid's socket line
        base = f"postgresql://postgres:@/{{db}}?host={socket_dir}"
        print(f"embedded PostgreSQL: running (pid {pid}) in {pgdata}")
        print(f"source:    {base.format(db=SOURCE_DB)}")
        print(f"warehouse: {base.format(db=WAREHOUSE_DB)}")
    print(f"lake:      {home / 'lake'}")


def lake_root() -> Path:
    """The embedded lake: a local folder with the same key layout as the S3 bucket."""
    require_demo_allowed(ENV_LAKE_URL)
    return totesys_home() / "lake"


def stop() -> None:
    """Stop the embedded PostgreSQL cluster, if one runs under TOTESYS_HOME."""
    import pgserver

    pgdata = totesys_home() / "pg"
    if not (pgdata / "postmaster.pid").exists():
        print(f"no embedded PostgreSQL running in {pgdata}")
        return
    with _locked(totesys_home()):
        _forget_dead_users(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        server.cleanup()
    if running_pid(pgdata) is not None:  # pgserver stops a server only when its last user leaves
        raise SystemExit(
            f"the embedded PostgreSQL in {pgdata} is still used by another process; stop that first"
        )
    print(f"stopped the embedded PostgreSQL in {pgdata}")


def _forget_dead_users(pgdata: Path) -> None:
    """Drop from pgserver's list of the cluster's users (`.handle_pids.json`, pgserver 0.1.4) the
    processes that died without leaving (kill -9, a closed terminal): pgserver stops a cluster only
    when its last user leaves and never prunes that list, so `stop` would refuse for ever."""
    import psutil
    from pgserver.utils import DiskList

    users = DiskList(pgdata / ".handle_pids.json")
    for pid in users.get():
        if not psutil.pid_exists(pid):
            users.get_and_remove(pid)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args == ["stop"]:
        stop()
    elif args in ([], ["status"]):
        status()
    else:
        raise SystemExit("usage: python -m totesys_assets.embedded [status|stop]")


if __name__ == "__main__":
    main()
