"""The deployment configuration under deploy/, loaded by real Dagster against real services.

- deploy/dagster.yaml: a real DagsterInstance on the embedded PostgreSQL (reached over TCP through a
  small proxy, because the file takes host/port from env vars) with compute logs in moto's S3; a
  real run writes events and logs, which are read back; deploy/init_instance.sh sets the pools.
- deploy/dagster.local.yaml: the same on DAGSTER_PG_URL with local compute logs.
- deploy/dagster.ecs.yaml: validated with Dagster's config schemas; the EcsRunLauncher is built
  from it (no AWS call is made).
- deploy/workspace.yaml and deploy/Dockerfile: no image is built (no Docker engine); the Dockerfile's
  steps are checked against the repository and its module loaded; its command serves the code
  location and `dagster definitions validate` loads it through the workspace file (slow).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.workspace.config_schema import process_workspace_config
from dagster._serdes import ConfigurableClassData
from dagster._serdes.config_class import class_from_code_pointer
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from packaging.specifiers import SpecifierSet

from totesys_assets.instance_storage import PooledPostgresEventLogStorage
from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_assets_tests.conftest import REPO_ROOT
from totesys_assets_tests.e2e_support import psycopg2_url

DEPLOY = REPO_ROOT / "deploy"
STORAGE_CLASSES = {
    "run_storage": PostgresRunStorage,
    "event_log_storage": PooledPostgresEventLogStorage,
    "schedule_storage": PostgresScheduleStorage,
}
PRINTED = "hello from a deployed run"


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


class TcpToUnixProxy:
    """127.0.0.1:<port> -> the embedded PostgreSQL's unix socket (pgserver listens on no TCP port)."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.socket_path)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def _socket_dir(url: str) -> str:
    return parse_qs(urlsplit(url).query)["host"][0]


def _db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


@pytest.fixture(scope="module")
def pg_tcp(pg) -> Iterator[TcpToUnixProxy]:
    proxy = TcpToUnixProxy(os.path.join(_socket_dir(pg.base_uri), ".s.PGSQL.5432"))
    try:
        yield proxy
    finally:
        proxy.close()


def _home_with(tmp_path: Path, config_file: str) -> Path:
    """A DAGSTER_HOME holding deploy/<config_file> verbatim as dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / config_file, home / "dagster.yaml")
    return home


@dg.asset(pool="totesys_source")
def deployed_asset() -> int:
    print(PRINTED)
    return 1


def _assert_shared_settings(instance: dg.DagsterInstance) -> None:
    """What every deployment instance promises: queue, pools, run retries, monitoring, no telemetry."""
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config is not None
    assert concurrency.run_queue_config.max_concurrent_runs == 10
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity.value == "op"
    assert instance.run_retries_enabled
    assert instance.run_retries_max_retries == 2
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 300
    assert not instance.telemetry_enabled
    settings = instance.get_settings("sensors")
    assert settings["use_threads"] and settings["num_workers"] == 4


def _run_and_read_back(instance: dg.DagsterInstance) -> dg.DagsterRun:
    """A real run against the instance; its run, events and an extra engine event read back."""
    result = dg.materialize([deployed_asset], instance=instance)
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
    assert (
        instance.get_run_records(filters=dg.RunsFilter(run_ids=[run.run_id]))[0].dagster_run.run_id
        == run.run_id
    )

    instance.report_engine_event("deploy config check", run)
    logs = instance.all_logs(run.run_id)
    types = {e.dagster_event.event_type for e in logs if e.is_dagster_event}
    assert {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.ASSET_MATERIALIZATION} <= types
    assert any(e.message == "deploy config check" for e in logs)
    assert instance.get_latest_materialization_event(dg.AssetKey("deployed_asset")).run_id == run.run_id

    # schedule storage and the daemon cursor table
    assert instance.schedule_storage.all_instigator_state() == []
    instance.run_storage.set_cursor_values({"deploy_config_test": "1"})
    assert instance.run_storage.get_cursor_values({"deploy_config_test"}) == {"deploy_config_test": "1"}

    # the step ran in the totesys_source pool, which was created with the default limit
    info = instance.event_log_storage.get_concurrency_info("totesys_source")
    assert info.slot_count == 1 and not info.claimed_slots
    return run


# --------------------------------------------------------------------------------------------------
# deploy/dagster.yaml
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def production_env(pg, pg_tcp, s3, monkeypatch) -> dict[str, str]:
    url = pg.new_db("dagster_prod")
    env = {
        "DAGSTER_PG_USERNAME": "postgres",
        "DAGSTER_PG_PASSWORD": "unused-by-trust-auth",
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_tcp.port),
        "DAGSTER_PG_DB": _db_name(url),
        "DAGSTER_COMPUTE_LOG_BUCKET": s3.new_bucket("dagster-logs"),
        "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs/prod",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_production_instance_stores_runs_events_and_logs(tmp_path, production_env, s3):
    home = _home_with(tmp_path, "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        for storage in (instance.run_storage, instance.event_log_storage, instance.schedule_storage):
            assert storage.postgres_url.startswith("postgresql+psycopg2://postgres:")
            assert f"@127.0.0.1:{production_env['DAGSTER_PG_PORT']}/" in storage.postgres_url
        _assert_shared_settings(instance)

        logs = instance.compute_log_manager
        assert isinstance(logs, S3ComputeLogManager)
        assert logs._s3_bucket == production_env["DAGSTER_COMPUTE_LOG_BUCKET"]  # noqa: SLF001
        assert logs.upload_interval == 30

        run = _run_and_read_back(instance)

        # the step's stdout was uploaded to S3 under the configured prefix
        bucket = production_env["DAGSTER_COMPUTE_LOG_BUCKET"]
        keys = s3.keys(bucket, "compute-logs/prod/storage/")
        assert keys, "no compute logs uploaded"
        bodies = [s3.client.get_object(Bucket=bucket, Key=k)["Body"].read().decode() for k in keys]
        assert any(PRINTED in body for body in bodies)
        assert any(run.run_id in k for k in keys)
    finally:
        instance.dispose()


@pytest.mark.slow
def test_init_instance_sets_the_pool_limits(tmp_path, production_env):
    """The documented one-off setup (pool limits cannot be put in dagster.yaml) against the yaml."""
    home = _home_with(tmp_path, "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["sh", str(DEPLOY / "init_instance.sh")], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.event_log_storage.get_concurrency_info("totesys_source").slot_count == 2
        assert instance.event_log_storage.get_concurrency_info("warehouse").slot_count == 1
        # an unconfigured pool falls back to pools.default_limit
        info = instance.event_log_storage.get_concurrency_info("some_new_pool")
        assert info.limit == 1 and info.using_default_limit
    finally:
        instance.dispose()


def test_production_yaml_pins_the_psycopg2_scheme():
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    for key in STORAGE_CLASSES:
        db = config[key]["config"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2", key
        for field in ("username", "password", "hostname", "db_name", "port"):
            assert set(db[field]) == {"env"}, (key, field)


# --------------------------------------------------------------------------------------------------
# deploy/dagster.local.yaml
# --------------------------------------------------------------------------------------------------


def test_local_instance_stores_runs_events_and_logs(tmp_path, pg, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(pg.new_db("dagster_local")))
    home = _home_with(tmp_path, "dagster.local.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert instance.event_log_storage.postgres_url == os.environ["DAGSTER_PG_URL"]
        _assert_shared_settings(instance)
        logs = instance.compute_log_manager
        assert isinstance(logs, LocalComputeLogManager)
        assert Path(logs._base_dir).is_relative_to(home)  # noqa: SLF001

        run = _run_and_read_back(instance)
        written = [p for p in Path(logs._base_dir).rglob("*") if p.is_file() and run.run_id in str(p)]  # noqa: SLF001
        assert any(PRINTED in p.read_text(errors="replace") for p in written)
    finally:
        instance.dispose()


@pytest.fixture
def no_batch_env(monkeypatch):
    """DAGSTER_EVENT_BATCH_SIZE unset during the test and restored after it (the pooled storage sets
    it process-wide)."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")


_daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


@dg.asset(partitions_def=_daily, backfill_policy=dg.BackfillPolicy.single_run())
def daily_asset(context) -> None:
    context.log.info(f"{len(context.partition_keys)} days")


def _range_run_sessions(instance: dg.DagsterInstance, url: str) -> int:
    """Connections opened on the storage database by one 60-day range run (pg_stat_database)."""

    def sessions() -> int:
        with psycopg.connect(url) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            conn.execute("SELECT pg_stat_clear_snapshot()")
            (n,) = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", [_db_name(url)]
            ).fetchone()  # type: ignore[misc]
            return n

    before = sessions()
    result = dg.materialize(
        [daily_asset],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-02-29",
        },
    )
    after = sessions()
    assert result.success
    keys = instance.get_materialized_partitions(dg.AssetKey("daily_asset"))
    assert len(keys) == 60 and {"2024-01-01", "2024-02-29"} <= keys
    planned = instance.fetch_planned_materializations(dg.AssetKey("daily_asset"), limit=1000).records
    assert sorted(r.partition_key for r in planned) == sorted(keys)
    return after - before - 2  # the two sessions() connections


def test_pooled_event_log_keeps_its_connections(tmp_path, pg, monkeypatch, no_batch_env):
    """The deployment's event log (deploy/dagster.local.yaml) stores a 60-partition range run over a
    handful of connections and in batches; dagster-postgres' stock storage (the same database
    layout) opens two connections per event."""
    stock_url = pg.new_db("dagster_stock")
    stock_home = tmp_path / "stock"
    stock_home.mkdir()
    (stock_home / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: '{psycopg2_url(stock_url)}'\n"
    )
    stock = dg.DagsterInstance.from_config(str(stock_home))
    try:
        assert type(stock.event_log_storage) is PostgresEventLogStorage
        stock_sessions = _range_run_sessions(stock, stock_url)
    finally:
        stock.dispose()
    assert "DAGSTER_EVENT_BATCH_SIZE" not in os.environ

    url = pg.new_db("dagster_pooled")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(url))
    instance = dg.DagsterInstance.from_config(str(_home_with(tmp_path, "dagster.local.yaml")))
    try:
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "1000"
        pooled_sessions = _range_run_sessions(instance, url)
    finally:
        instance.dispose()
    # 60 planned + 60 materialisation events, two connections each, on the stock storage
    # (measured: 333 and 21; the pooled run's are mostly the run storage's, which stays stock)
    assert stock_sessions >= 240, (stock_sessions, pooled_sessions)
    assert pooled_sessions <= 60, (stock_sessions, pooled_sessions)


@dg.asset(partitions_def=_daily, backfill_policy=dg.BackfillPolicy.single_run())
def failing_daily_asset() -> None:
    raise RuntimeError("source unreachable")


def test_pooled_event_log_marks_a_failed_range_run_partitions_failed(tmp_path, pg, monkeypatch, no_batch_env):
    """The batched planned events still drive Dagster's partition status: the days of a failed
    range run show as failed (red in the UI), a later success clears them."""
    from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(pg.new_db("dagster_failed")))
    instance = dg.DagsterInstance.from_config(str(_home_with(tmp_path, "dagster.local.yaml")))
    key = dg.AssetKey("failing_daily_asset")
    try:
        result = dg.materialize(
            [failing_daily_asset],
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2024-01-01",
                "dagster/asset_partition_range_end": "2024-01-31",
            },
            raise_on_error=False,
        )
        assert not result.success
        status = get_and_update_asset_status_cache_value(instance, key, _daily)
        assert status is not None
        failed = status.deserialize_failed_partition_subsets(_daily)
        assert set(failed.get_partition_keys()) == {f"2024-01-{d:02d}" for d in range(1, 32)}
        assert not status.deserialize_in_progress_partition_subsets(_daily).get_partition_keys()
    finally:
        instance.dispose()


@dg.asset(partitions_def=_daily, backfill_policy=dg.BackfillPolicy.single_run())
def versioned_daily_asset(context) -> dg.MaterializeResult:
    for i, day in enumerate(context.partition_keys):
        context.add_asset_metadata({"day_number": i}, partition_key=day)
    return dg.MaterializeResult(data_version=dg.DataVersion("v1"))


@dg.asset_check(asset=versioned_daily_asset, blocking=True)
def versioned_daily_asset_ok() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _sorted_rows(rows) -> list[tuple]:
    """Rows in a stable order although some columns hold NULL."""
    return sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r))


def _stored_rows(url: str) -> dict[str, object]:
    """What a storage wrote for one run, without ids and timestamps, plus the id links between tables."""
    with psycopg.connect(url) as conn:
        q = conn.execute
        events = _sorted_rows(
            q(
                "SELECT dagster_event_type, asset_key, partition FROM event_logs WHERE dagster_event_type IS NOT NULL"
            )
        )
        # Every indexed tag points at the materialisation of its own partition (ids in event order).
        tag_links = q(
            "SELECT count(*), count(*) FILTER (WHERE e.dagster_event_type = 'ASSET_MATERIALIZATION' "
            "AND e.event::jsonb #>> '{dagster_event,event_specific_data,materialization,partition}' = e.partition) "
            "FROM asset_event_tags t JOIN event_logs e ON e.id = t.event_id"
        ).fetchone()
        tags = _sorted_rows(q("SELECT asset_key, key, value FROM asset_event_tags"))
        # The asset row names the newest materialisation, and it is the last day's.
        latest = q(
            "SELECT e.partition FROM asset_keys k JOIN event_logs e ON e.id = (k.last_materialization::jsonb ->> 'storage_id')::int"
        ).fetchall()
        checks = _sorted_rows(
            q("SELECT asset_key, check_name, partition, execution_status FROM asset_check_executions")
        )
        check_links = q(
            "SELECT count(*) FILTER (WHERE e.dagster_event_type = 'ASSET_CHECK_EVALUATION_PLANNED') "
            "FROM asset_check_executions c JOIN event_logs e ON e.id = c.evaluation_event_storage_id"
        ).fetchone()
    return {"events": events, "tag_links": tag_links, "tags": tags, "latest": latest, "checks": checks,
            "check_links": check_links}  # fmt: skip


def test_pooled_event_log_stores_the_same_rows_as_the_stock_storage(tmp_path, pg, monkeypatch):
    """The batched writes (planned and materialisation events by executemany, planned check rows
    from one serialised event) store exactly what dagster-postgres stores, with the same links."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    tags = {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-02-29",
    }
    stored = {}
    for name in ("stock", "pooled"):
        url = pg.new_db(f"dagster_same_{name}")
        home = tmp_path / name
        home.mkdir()
        if name == "stock":
            (home / "dagster.yaml").write_text(
                f"storage:\n  postgres:\n    postgres_url: '{psycopg2_url(url)}'\n"
            )
        else:
            monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(url))
            home = _home_with(home, "dagster.local.yaml")
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            expected = PostgresEventLogStorage if name == "stock" else PooledPostgresEventLogStorage
            assert type(instance.event_log_storage) is expected
            result = dg.materialize(
                [versioned_daily_asset, versioned_daily_asset_ok], instance=instance, tags=tags
            )
            assert result.success
            records = instance.fetch_materializations(dg.AssetKey("versioned_daily_asset"), limit=100).records
            assert len(records) == 60
            days = _daily.get_partition_keys()
            for r in records:  # each storage id holds its own partition's event
                assert r.asset_materialization.metadata["day_number"].value == days.index(r.partition_key)
        finally:
            instance.dispose()
        stored[name] = _stored_rows(url)

    stock, pooled = stored["stock"], stored["pooled"]
    assert len(pooled["events"]) == len(stock["events"]) >= 2 * 60
    assert pooled == stock
    assert stock["tag_links"][0] > 0 and stock["tag_links"][0] == stock["tag_links"][1]
    assert stock["latest"] == [("2024-02-29",)]
    assert stock["check_links"] == (60,)
    # one planned row per day of the range (Dagster records the unpartitioned result beside them)
    assert {row[2] for row in stock["checks"] if row[3] == "PLANNED"} == set(_daily.get_partition_keys())


def test_planned_events_serialised_from_a_template_are_exactly_dagsters(tmp_path, pg, monkeypatch):
    """A range run's planned materialisations are serialised from one template per asset: every
    row is what `_event_to_row` (dagster-postgres) makes of that event, its own partition and time."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    url = pg.new_db("dagster_template")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(url))
    templated: list[str | None] = []
    from_template = PooledPostgresEventLogStorage._row_from_template

    def counted(self, template, event):
        templated.append(event.get_dagster_event().partition)
        return from_template(self, template, event)

    monkeypatch.setattr(PooledPostgresEventLogStorage, "_row_from_template", counted)
    instance = dg.DagsterInstance.from_config(str(_home_with(tmp_path, "dagster.local.yaml")))
    try:
        tags = {
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-02-29",
        }
        result = dg.materialize([versioned_daily_asset], instance=instance, tags=tags)
        assert result.success
        planned = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        days = _daily.get_partition_keys()
        assert [e.get_dagster_event().partition for e in planned] == days
        # all but the first (serialised in full to check the template) came from the template
        assert templated == days[1:]
        storage = instance.event_log_storage
        assert storage._event_rows(planned) == [storage._event_to_row(e) for e in planned]
        with psycopg.connect(url) as conn:
            mismatched = conn.execute(
                "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED' "
                "AND event::jsonb #>> '{dagster_event,event_specific_data,partition}' IS DISTINCT FROM partition"
            ).fetchone()
        assert mismatched == (0,)
    finally:
        instance.dispose()


def test_pooled_event_log_respects_an_explicit_batch_size(tmp_path, pg, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    monkeypatch.setenv("DAGSTER_PG_URL", psycopg2_url(pg.new_db("dagster_nobatch")))
    instance = dg.DagsterInstance.from_config(str(_home_with(tmp_path, "dagster.local.yaml")))
    try:
        assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"
        assert dg.materialize([deployed_asset], instance=instance).success
    finally:
        instance.dispose()


def test_plain_postgresql_url_breaks_event_writes(tmp_path, pg, monkeypatch):
    """Why the local yaml's DAGSTER_PG_URL must say postgresql+psycopg2: with SQLAlchemy 2.1 the
    plain scheme selects psycopg 3, on which dagster-postgres' first event write fails."""
    monkeypatch.setenv("DAGSTER_PG_URL", pg.new_db("dagster_plain"))
    home = _home_with(tmp_path, "dagster.local.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        with pytest.raises(Exception, match="NOTIFY"):
            dg.materialize([deployed_asset], instance=instance)
    finally:
        instance.dispose()


# --------------------------------------------------------------------------------------------------
# deploy/dagster.ecs.yaml
# --------------------------------------------------------------------------------------------------

ECS_ENV = {
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "from-secrets-manager",
    "DAGSTER_PG_HOST": "dagster.cluster-abc.eu-west-2.rds.amazonaws.com",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_COMPUTE_LOG_BUCKET": "totes-dagster-logs",
    "DAGSTER_COMPUTE_LOG_PREFIX": "compute-logs",
    "DAGSTER_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/dagster-execution",
    "DAGSTER_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/dagster-run",
    "DAGSTER_ECS_LOG_GROUP": "/ecs/dagster-runs",
    "DAGSTER_PG_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:123456789012:secret:dagster-pg-AbCdEf",
    "TOTESYS_DB_URL_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:123456789012:secret:totesys-db-url-AbCdEf",
    "WAREHOUSE_DB_URL_SECRET_ARN": "arn:aws:secretsmanager:eu-west-2:123456789012:secret:warehouse-url-AbCdEf",
}


def _resolved(config_schema, value) -> dict:
    result = process_config(config_schema, value)
    assert result.success, [e.message for e in result.errors or []]
    return result.value


def test_ecs_yaml_is_valid_instance_config(monkeypatch):
    for name, value in ECS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")

    config, custom_class = dagster_instance_config(str(DEPLOY), config_filename="dagster.ecs.yaml")
    assert custom_class is None

    # each pluggable class resolves and its config passes that class's own schema
    launcher_data = ConfigurableClassData(
        config["run_launcher"]["module"],
        config["run_launcher"]["class"],
        yaml.dump(config["run_launcher"]["config"]),
    )
    assert class_from_code_pointer(launcher_data.module_name, launcher_data.class_name) is EcsRunLauncher
    launcher_config = _resolved(EcsRunLauncher.config_type(), config["run_launcher"]["config"])
    assert launcher_config["secrets"] == [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": ECS_ENV["DAGSTER_PG_PASSWORD_SECRET_ARN"]},
        {"name": "TOTESYS_DB_URL", "valueFrom": ECS_ENV["TOTESYS_DB_URL_SECRET_ARN"]},
        {"name": "WAREHOUSE_DB_URL", "valueFrom": ECS_ENV["WAREHOUSE_DB_URL_SECRET_ARN"]},
    ]
    assert (
        launcher_config["task_definition"]["execution_role_arn"] == ECS_ENV["DAGSTER_ECS_EXECUTION_ROLE_ARN"]
    )
    assert launcher_config["secrets_tag"] is None

    # built from that config the launcher makes no AWS call (task_definition is a dict, not an ARN)
    launcher = launcher_data.rehydrate(EcsRunLauncher)
    assert isinstance(launcher, EcsRunLauncher)
    assert launcher.use_current_ecs_task_config
    assert "TOTESYS_LAKE_URL" in launcher.env_vars

    logs_data = config["compute_logs"]
    assert class_from_code_pointer(logs_data["module"], logs_data["class"]) is S3ComputeLogManager
    logs_config = _resolved(S3ComputeLogManager.config_type(), logs_data["config"])
    assert logs_config["bucket"] == "totes-dagster-logs"

    for key, cls in STORAGE_CLASSES.items():
        data = config[key]
        assert class_from_code_pointer(data["module"], data["class"]) is cls, key
        storage = _resolved(cls.config_type(), data["config"])
        assert storage["postgres_db"]["scheme"] == "postgresql+psycopg2"
        assert storage["postgres_db"]["params"] == {"sslmode": "require"}

    # everything but launcher, storage params and monitoring timeouts matches deploy/dagster.yaml
    production = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    ecs = yaml.safe_load((DEPLOY / "dagster.ecs.yaml").read_text())
    for key in (
        "concurrency",
        "run_retries",
        "compute_logs",
        "sensors",
        "schedules",
        "retention",
        "telemetry",
    ):
        assert ecs[key] == production[key], key


# --------------------------------------------------------------------------------------------------
# deploy/workspace.yaml and deploy/Dockerfile
# --------------------------------------------------------------------------------------------------


def test_workspace_yaml_points_at_the_grpc_code_server(monkeypatch):
    monkeypatch.setenv("TOTESYS_CODE_SERVER_HOST", "totesys-code")
    monkeypatch.setenv("TOTESYS_CODE_SERVER_PORT", "4000")
    result = process_workspace_config(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()))
    assert result.success, [e.message for e in result.errors or []]
    (entry,) = result.value["load_from"]
    assert entry["grpc_server"] == {"host": "totesys-code", "port": 4000, "location_name": "totesys_assets"}


def _dockerfile_cmd() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, flags=re.MULTILINE)
    return json.loads(cmd)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(" ", 1)[0], line.split(" ", 1)[1].strip()) for line in lines]


def _in_build_context(path: str, patterns: list[str]) -> bool:
    """Whether a .dockerignore keeps `path` in the build context: the last matching pattern wins
    (fnmatch's `*` crosses `/`, as Docker's `**` does)."""
    kept = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")):
            kept = negated
    return kept


def test_dockerfile_installs_the_package_and_serves_the_code_location_module(tmp_path):
    """There is no Docker engine here, so the image is not built. Checked instead: the base image
    runs the Python versions the package supports, every COPY source exists and is in the build
    context, `pip install .` comes after the package's metadata and code, the command serves the
    module and location pyproject names, and that module loads in a fresh interpreter with no
    TOTESYS_ settings, as in the image."""
    steps = _dockerfile_instructions()
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    ignore = [p for p in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if p and p[0] != "#"]
    kinds = [kind for kind, _ in steps]
    assert kinds[0] == "FROM" and kinds.count("CMD") == 1

    (base,) = [args for kind, args in steps if kind == "FROM"]
    version = re.fullmatch(r"python:(\d+\.\d+)-slim", base)
    assert version and SpecifierSet(project["project"]["requires-python"]).contains(version[1] + ".0")

    env = dict(item.split("=", 1) for kind, args in steps if kind == "ENV" for item in shlex.split(args))
    for kind, args in steps:
        if kind != "COPY":
            continue
        *sources, destination = shlex.split(args)
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
            files = [source] if (REPO_ROOT / source).is_file() else [
                str(f.relative_to(REPO_ROOT)) for f in (REPO_ROOT / source).rglob("*.py")
                if "__pycache__" not in f.parts
            ]  # fmt: skip
            assert files and all(_in_build_context(f, ignore) for f in files), source
        if "deploy/dagster.yaml" in sources:  # the instance the webserver and the daemon load
            assert destination.rstrip("/") in ("${DAGSTER_HOME}", env["DAGSTER_HOME"])
    for outside in ("totesys_assets_tests/conftest.py", "deploy/terraform/main.tf", ".venv/pyvenv.cfg"):
        assert not _in_build_context(outside, ignore), outside

    # `pip install .` sees the metadata and the code the package is built from, and nothing later
    install = steps.index(("RUN", "pip install ."))
    before = [s for kind, args in steps[:install] if kind == "COPY" for s in shlex.split(args)[:-1]]
    package = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"pyproject.toml", "setup.py", project["project"]["readme"]} <= set(before)
    assert [p.rstrip("*") for p in package] == [s for s in before if (REPO_ROOT / s).is_dir()]
    dependencies = {re.split(r"[=<>\[ ]", d)[0] for d in project["project"]["dependencies"]}
    assert {"dagster", "dagster-webserver", "dagster-postgres", "dagster-aws"} <= dependencies
    (user,) = [args for kind, args in steps if kind == "USER"]
    assert user not in ("root", "0")

    (cmd,) = [json.loads(args) for kind, args in steps if kind == "CMD"]
    assert cmd == _dockerfile_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    options = dict(zip(cmd[3::2], cmd[4::2], strict=True))
    (port,) = [args for kind, args in steps if kind == "EXPOSE"]
    assert options == {
        "-h": "0.0.0.0",
        "-p": port,
        "-m": project["tool"]["dagster"]["module_name"],
        "--location-name": project["tool"]["dagster"]["code_location_name"],
    }

    probe = (
        "import importlib, sys, dagster as dg; "
        "defs = importlib.import_module(sys.argv[1]).defs; dg.Definitions.validate_loadable(defs); "
        "print(len(defs.resolve_asset_graph().get_all_asset_keys()))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_", "DAGSTER_"))}
    clean.update(DAGSTER_HOME=str(tmp_path), TOTESYS_HOME=str(tmp_path / "totesys"))
    loaded = subprocess.run(
        [sys.executable, "-c", probe, options["-m"]], cwd=tmp_path, env=clean, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    # the raw asset and the observable source asset of each source table, and each warehouse table
    assert int(loaded.stdout.split()[-1]) == 2 * len(SOURCE_TABLES) + len(WAREHOUSE_TABLES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_image_command_serves_the_workspace(tmp_path, pg):
    """The Dockerfile's command (host/port swapped for 127.0.0.1 and a free port) serves the code
    location, and `dagster definitions validate` loads it through deploy/workspace.yaml on an
    instance configured by deploy/dagster.local.yaml: what the webserver and daemon do."""
    port = _free_port()
    cmd = _dockerfile_cmd()
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    cmd[cmd.index("-p") + 1] = str(port)
    bin_dir = Path(sys.executable).parent
    cmd[0] = str(bin_dir / "dagster")

    home = _home_with(tmp_path, "dagster.local.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_URL=psycopg2_url(pg.new_db("dagster_ws")),
        TOTESYS_HOME=str(tmp_path / "totesys"),
        TOTESYS_CODE_SERVER_HOST="127.0.0.1",
        TOTESYS_CODE_SERVER_PORT=str(port),
    )
    server = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 180
        result = None
        while time.monotonic() < deadline and server.poll() is None:
            result = subprocess.run(
                [str(bin_dir / "dagster"), "definitions", "validate", "-w", str(DEPLOY / "workspace.yaml")],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            if result.returncode == 0:
                break
            time.sleep(2)
        assert server.poll() is None, server.stdout.read().decode()[-3000:] if server.stdout else ""
        assert result is not None and result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert "totesys_assets" in result.stdout + result.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
