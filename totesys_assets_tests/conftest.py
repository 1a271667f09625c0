"""Shared fixtures: a real embedded PostgreSQL (pgserver) and a real S3 HTTP API (moto server)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(
    os.environ.get("TOTESYS_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "totesys_reference")
)


# Files whose tests share the session-scoped real-export fixtures: one xdist worker runs them all,
# so the real export is backfilled once per suite, not once per worker. Every other file is its own
# unit of work, as `--dist loadfile` makes it (module-scoped fixtures are built once).
REAL_EXPORT_FILES = {"test_raw_assets.py", "test_star_assets.py", "test_dashboard.py"}


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile`, with the real-export files as one unit (xdist's `loadgroup` marks do not
    group under pytest 9: they rename node ids, which pytest no longer lets a plugin do)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class RealExportTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "real_export" if Path(path).name in REAL_EXPORT_FILES else path

    return RealExportTogether(config, log)


def reference_path(*parts: str) -> Path:
    """A path inside the real exports; skips the test with a reason when they are absent."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real totesys exports not found at {path} (set TOTESYS_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return reference_path()


@dataclass
class PgCluster:
    """One embedded PostgreSQL server; every test gets fresh databases on it."""

    server: object
    base_uri: str
    _counter = itertools.count()

    def url(self, dbname: str) -> str:
        return self.base_uri.replace("/postgres?", f"/{dbname}?", 1)

    def new_db(self, prefix: str = "db") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.base_uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def clone_db(self, url: str, prefix: str = "copy") -> str:
        """A new database copied from the one at `url` (CREATE DATABASE … TEMPLATE; fast, file level).

        A template must have no other sessions: any left (idle, in this test cluster) are ended first.
        """
        source = urlsplit(url).path.lstrip("/")
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.base_uri, autocommit=True) as conn:
            for _attempt in range(5):
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (source,),
                )
                try:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.2)
            else:
                raise RuntimeError(f"could not copy database {source!r}: it stays in use")
        return self.url(name)

    def new_instance(self, home: Path, prefix: str = "dagster"):
        """A Dagster instance on a new database of this cluster, configured as `totesys-dev`'s
        (PostgreSQL storage, the pooled event log): much faster than the ephemeral instance for a
        range run's thousands of partition events."""
        import dagster as dg

        from totesys_assets_tests.e2e_support import write_quick_start_instance

        write_quick_start_instance(home, self.new_db(prefix))
        return dg.DagsterInstance.from_config(str(home))

    def new_source(self, prefix: str, *, seed: int, **history):
        """A fresh totesys source with the real schema and simulated history (`seed_history` args)."""
        from totesys_assets.simulator import Simulator

        url = self.new_db(prefix)
        sim = Simulator(url, seed=seed)
        sim.create_schema()
        sim.seed_history(**history)
        return url, sim


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    import pgserver

    # Unix socket paths must stay short (~100 bytes), so the cluster lives directly under /tmp.
    path = tempfile.mkdtemp(prefix="tpg", dir="/tmp")
    server = pgserver.get_server(path, cleanup_mode="delete")
    try:
        yield PgCluster(server=server, base_uri=server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class S3Endpoint:
    endpoint_url: str
    _counter = itertools.count()

    @property
    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def new_bucket(self, prefix: str = "lake") -> str:
        name = f"{prefix}-{os.getpid()}-{next(self._counter)}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


# moto's ThreadedMotoServer in a process of its own: in the test's process its request handling
# competed with the pipeline's threads for the GIL and made S3-backed runs several times slower.
# The server exits when its stdin closes, so a killed test process leaves no server behind.
_MOTO = (
    "import logging, sys\n"
    "from moto.server import ThreadedMotoServer\n"
    "logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
    "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
    "server.start()\n"
    "print('%s:%s' % server.get_host_and_port(), flush=True)\n"
    "sys.stdin.read()\n"
    "server.stop()\n"
)


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's real S3 (and SNS, SQS) HTTP server on 127.0.0.1 in a child process; its endpoint URL."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        address = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert address, f"moto server did not start (exit code {proc.poll()})"
        yield f"http://{address}"
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Endpoint]:
    """moto's real S3 HTTP server (moto_server); boto3 reaches it via AWS_ENDPOINT_URL_S3."""
    with moto_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL_S3": endpoint}.items():
            mp.setenv(name, value)
        yield S3Endpoint(endpoint_url=endpoint)


@pytest.fixture
def s3(s3_server: S3Endpoint) -> S3Endpoint:
    return s3_server


@dataclass
class RealExportLake:
    """The real 2024-11-15 export in PostgreSQL, backfilled once into a moto S3 lake."""

    source_url: str
    bucket: str
    lake_url: str
    result: object  # the ExecuteInProcessResult of the single-run range backfill
    first_day: str = "2022-11-03"
    last_day: str = "2024-11-15"


@pytest.fixture(scope="session")
def real_export_lake(pg: PgCluster, s3_server: S3Endpoint) -> RealExportLake:
    """One single-run backfill of all 11 raw assets over the whole export, shared by the suite.

    The full range is ~8,000 partition materialisations; Dagster's bookkeeping for them is the
    slowest part of the suite, so it is paid once.
    """
    from totesys_assets.raw.assets import raw_assets
    from totesys_assets.resources.config import build_resources
    from totesys_assets.simulator import Simulator
    from totesys_assets_tests.helpers import materialize_range

    folder = reference_path("oltp_2024-11-15_parquet")
    url = pg.new_db("real_export")
    sim = Simulator(url)
    sim.create_schema()
    sim.load_reference(folder)
    bucket = s3_server.new_bucket("real")
    lake_url = f"s3://{bucket}/totes"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOTESYS_DB_URL", url)
        mp.setenv("TOTESYS_LAKE_URL", lake_url)
        with pg.new_instance(Path(tempfile.mkdtemp(prefix="real_lake_home"))) as instance:
            result = materialize_range(
                raw_assets, build_resources(), "2022-11-03", "2024-11-15", instance=instance
            )
    return RealExportLake(source_url=url, bucket=bucket, lake_url=lake_url, result=result)


@dataclass
class RealExportWarehouse:
    """The real export's lake (`real_export_lake`) loaded into a warehouse, as the README's headless
    backfill does: one run of the dimensions, one single run of the facts over the whole range.

    Shared by the suite: a test must leave it as it found it; to change it, copy it first
    (`pg.clone_db(real_export_warehouse.url)`).
    """

    url: str
    lake: RealExportLake
    results: list  # the ExecuteInProcessResults of the dimensions run and the facts range run


@pytest.fixture(scope="session")
def real_export_warehouse(real_export_lake: RealExportLake, pg: PgCluster) -> RealExportWarehouse:
    import dagster as dg

    from totesys_assets.raw.assets import raw_assets
    from totesys_assets.resources.config import build_resources
    from totesys_assets.star.assets import star_assets
    from totesys_assets.star.checks import star_checks
    from totesys_assets_tests.helpers import materialize_range

    everything = [*raw_assets, *star_assets, *star_checks]
    url = pg.new_db("real_wh")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOTESYS_DB_URL", real_export_lake.source_url)
        mp.setenv("TOTESYS_LAKE_URL", real_export_lake.lake_url)
        mp.setenv("WAREHOUSE_DB_URL", url)
        resources = build_resources()
        with pg.new_instance(Path(tempfile.mkdtemp(prefix="real_wh_home"))) as instance:
            results = [
                dg.materialize(
                    everything, resources=resources, selection=dg.AssetSelection.groups("dimensions"),
                    instance=instance,
                ),
                materialize_range(
                    everything, resources, real_export_lake.first_day, real_export_lake.last_day,
                    selection=dg.AssetSelection.groups("facts"), instance=instance,
                ),
            ]  # fmt: skip
    return RealExportWarehouse(url=url, lake=real_export_lake, results=results)
