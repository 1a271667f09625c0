"""Machinery for the end-to-end daemon test and the latency benchmark (bench/latency.py).

A real deployment on one machine: `dagster dev` (webserver + daemon + one code server) on a
DAGSTER_HOME holding deploy/dagster.local.yaml verbatim, Dagster's storage in an embedded
PostgreSQL database, a simulator source, a warehouse database and a moto S3 lake. The warehouse is
first brought up to date headlessly (the README's sequence, in-process, recorded in the same
instance), so what is measured is the incremental path:

    insert at the source -> source_change_sensor tick -> raw run -> star_automation tick
    -> dimension run -> star_automation tick -> fact run -> row visible in the warehouse
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import SENSOR_NAME_TAG

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE_YAML = REPO_ROOT / "deploy" / "dagster.local.yaml"
DAGSTER_BIN = str(Path(sys.executable).parent / "dagster")

CHANGE_SENSOR = "source_change_sensor"
AUTOMATION_SENSOR = "star_automation"
MARKER_VAR = "TOTESYS_E2E_MARKER"  # tags every process of one deployment (leak check)

# What deploy/init_instance.sh sets (defaults of TOTESYS_SOURCE_POOL_LIMIT / _WAREHOUSE_POOL_LIMIT).
POOL_LIMITS = {"totesys_source": 2, "warehouse": 1}

# The schedule's and the heartbeat's crons (settings.refresh_cron, settings.heartbeat_cron), moved out of
# the way of a measurement.
QUIET_CRONS = {"TOTESYS_REFRESH_CRON": "0 0 1 1 *", "TOTESYS_HEARTBEAT_CRON": "0 0 1 1 *"}

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def psycopg2_url(url: str) -> str:
    """dagster-postgres under SQLAlchemy 2.1 needs the psycopg2 driver named in the scheme."""
    return "postgresql+psycopg2://" + url.split("://", 1)[1]


def write_quick_start_instance(home: Path, storage_url: str) -> Path:
    """totesys-dev's dagster.yaml (PostgreSQL storage, the pooled event log) in `home`, on the
    database at `storage_url`."""
    from totesys_assets.dev import INSTANCE_YAML, MARKER

    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(INSTANCE_YAML.format(marker=MARKER, url=psycopg2_url(storage_url)))
    return path


def utc_now_ms() -> datetime:
    """Now, UTC, naive, millisecond precision (the source's timestamp(3))."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ replaced by `env` for the duration (restored exactly afterwards)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --------------------------------------------------------------------------------------------------
# The deployment's inputs: source, warehouse, lake, instance
# --------------------------------------------------------------------------------------------------


@dataclass
class Deployment:
    """Everything one `dagster dev` deployment runs against, and its environment."""

    source_url: str
    warehouse_url: str
    lake_url: str
    dagster_home: Path
    storage_url: str  # DAGSTER_PG_URL (postgresql+psycopg2://)
    env: dict[str, str]
    first_day: str
    today: str
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.env[MARKER_VAR] = self.marker

    @contextmanager
    def environ(self) -> Iterator[None]:
        with patched_environ(self.env):
            yield

    @contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The deployment's instance (deploy/dagster.local.yaml on DAGSTER_PG_URL), in this process."""
        with self.environ(), dg.DagsterInstance.get() as instance:
            yield instance


def prepare_deployment(
    *,
    new_db,
    new_bucket,
    s3_endpoint: str,
    workdir: Path,
    days: int = 3,
    sensor_interval_s: int = 5,
    automation_interval_s: int = 5,
    keep_crons: bool = False,
    order_today: bool = True,
    extra_env: Mapping[str, str] | None = None,
) -> Deployment:
    """A seeded source (history of `days` days up to now, plus a sales order a minute ago if
    `order_today`), an empty warehouse, a fresh lake bucket and a DAGSTER_HOME with
    deploy/dagster.local.yaml on a fresh storage database.

    Unless `keep_crons`, the raw refresh schedule and the automation heartbeat are moved to a
    yearly cron (QUIET_CRONS) so that only the change sensor and the automation sensor act: their
    periodic full refreshes would otherwise land in the middle of a measurement at random.

    `new_db(prefix) -> postgresql:// URL` and `new_bucket(prefix) -> name` come from the test
    fixtures (or `embedded_services` in the benchmark).
    """
    from totesys_assets.simulator import Simulator

    source_url = new_db("e2e_src")
    sim = Simulator(source_url)
    sim.create_schema()
    end = utc_now_ms()
    sim.seed_history(days=days, end=end)
    if order_today:
        # The seeded business trades Mon-Fri 08:00-18:59; at night or on a weekend the newest order
        # is days old, and the change sensor then (by design) re-extracts every day since, which
        # would make the first measured change unlike the others.
        sim.insert_sales_order(at=max(end - timedelta(minutes=1), end.replace(hour=0, minute=0, second=0)))
    first_day = (end - timedelta(days=days)).date().isoformat()

    home = workdir / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(DEPLOY_INSTANCE_YAML, home / "dagster.yaml")
    storage_url = psycopg2_url(new_db("e2e_dagster"))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_", "DAGSTER_"))}
    env.update(AWS_TEST_ENV)
    env.update(
        AWS_ENDPOINT_URL_S3=s3_endpoint,
        TOTESYS_DB_URL=source_url,
        WAREHOUSE_DB_URL=new_db("e2e_wh"),
        TOTESYS_LAKE_URL=f"s3://{new_bucket('e2e')}/totes",
        TOTESYS_HOME=str(workdir / "totesys_home"),  # never used (everything is configured)
        # The partitions start with the seeded history, which the headless catch-up loads; with the
        # default start the automation would backfill two empty years in the middle of a measurement.
        TOTESYS_START_DATE=first_day,
        DAGSTER_HOME=str(home),
        DAGSTER_PG_URL=storage_url,
        TOTESYS_SENSOR_INTERVAL_S=str(sensor_interval_s),
        TOTESYS_AUTOMATION_INTERVAL_S=str(automation_interval_s),
        **({} if keep_crons else QUIET_CRONS),
        **(extra_env or {}),
    )
    return Deployment(
        source_url=source_url,
        warehouse_url=env["WAREHOUSE_DB_URL"],
        lake_url=env["TOTESYS_LAKE_URL"],
        dagster_home=home,
        storage_url=storage_url,
        env=env,
        first_day=first_day,
        today=end.date().isoformat(),
    )


def init_instance(deployment: Deployment) -> None:
    """What deploy/init_instance.sh does (schema + pool limits), in-process to save two CLI starts."""
    with deployment.instance() as instance:
        instance.upgrade()
        for pool, limit in POOL_LIMITS.items():
            instance.event_log_storage.set_concurrency_slots(pool, limit)


def catch_up_headlessly(deployment: Deployment, *, raw_as_range: bool = False) -> dict[str, float]:
    """The README's sequence, in-process, recorded in the deployment's instance: the raw layer over
    the seeded days, the dimensions, the facts range (one run). Returns seconds per step.

    The raw layer is extracted one day per run unless `raw_as_range`: a range run stamps every
    day with the data version of the whole range (raw/assets.py), so the first single-day refresh
    of each day afterwards (the change sensor's first tick, the schedule) looks like a change and
    sets off a cascade of dimension and fact runs that has nothing to do with the source.
    """
    from totesys_assets.raw.assets import raw_assets
    from totesys_assets.resources.config import build_resources
    from totesys_assets.star.assets import star_assets

    tags = {"totesys/trigger": "e2e_setup"}
    range_tags = {
        "dagster/asset_partition_range_start": deployment.first_day,
        "dagster/asset_partition_range_end": deployment.today,
    }
    first = datetime.fromisoformat(deployment.first_day)
    days = [
        (first + timedelta(days=i)).date().isoformat()
        for i in range((datetime.fromisoformat(deployment.today) - first).days + 1)
    ]
    raw_runs = [(None, range_tags)] if raw_as_range else [(day, {}) for day in days]
    steps = [*(("raw", *r) for r in raw_runs), ("dimensions", None, {}), ("facts", None, range_tags)]
    assets = [*raw_assets, *star_assets]
    timings: dict[str, float] = {}
    with deployment.instance() as instance:
        resources = build_resources()
        for group, partition_key, run_tags in steps:
            t = time.monotonic()
            result = dg.materialize(
                assets,
                resources=resources,
                selection=dg.AssetSelection.groups(group),
                instance=instance,
                partition_key=partition_key,
                tags={**tags, **run_tags},
            )
            assert result.success, f"headless {group} run {partition_key or run_tags} failed"
            timings[group] = timings.get(group, 0.0) + time.monotonic() - t
    return timings


# --------------------------------------------------------------------------------------------------
# `dagster dev` as a process group
# --------------------------------------------------------------------------------------------------


def _http(url: str, data: bytes | None = None) -> dict | str:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if body.startswith("{") else body


def marked_pids(marker: str) -> list[int]:
    """Processes (of this user) whose environment carries the deployment's marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


class DagsterDev:
    """`dagster dev` (webserver, daemon, code server; run workers are its children) in its own
    process group, output to a log file. `stop()` ends the whole group and checks for leftovers."""

    def __init__(self, deployment: Deployment, log_path: Path, dev_args: Sequence[str] = ()):
        self.deployment = deployment
        self.dev_args = list(dev_args)  # e.g. ["-m", "other.module"]; default: the repo's [tool.dagster]
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.leftovers: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> float:
        """Start and wait until the webserver serves the code location; returns seconds taken."""
        t = time.monotonic()
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process in stop()
        self.proc = subprocess.Popen(
            [DAGSTER_BIN, "dev", "-p", str(self.port), "-h", "127.0.0.1", *self.dev_args],
            cwd=REPO_ROOT, env=self.deployment.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._log = log
        query = json.dumps({"query": "{ assetNodes { id } }"}).encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagster dev exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if _http(f"{self.url}/graphql", query)["data"]["assetNodes"]:
                    return time.monotonic() - t
            except (OSError, KeyError, TypeError, ValueError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"dagster dev did not serve the code location in {timeout}s:\n{self.log_tail()}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        return _http(f"{self.url}/graphql", body)  # type: ignore[return-value]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> list[int]:
        """SIGTERM to the process group, SIGKILL after 30 s; then kill (by pid) and return any
        process still carrying the deployment's marker (there should be none)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            # The group may outlive its leader (children still shutting down).
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.2)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
            self._log.close()
        self.leftovers = marked_pids(self.deployment.marker)
        for pid in self.leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.leftovers

    def __enter__(self) -> DagsterDev:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------
# Observing the daemon's work through the instance
# --------------------------------------------------------------------------------------------------

# Not finished yet (IN_PROGRESS_RUN_STATUSES leaves out the queued and not-started runs).
UNFINISHED_STATUSES = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, *IN_PROGRESS_RUN_STATUSES]


def latest_tick(instance: dg.DagsterInstance, sensor_name: str):
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == sensor_name:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)
            return ticks[0] if ticks else None
    return None


def wait_until_quiet(instance: dg.DagsterInstance, *, timeout: float, poll: float = 1.0) -> float:
    """Wait until no run is queued or in progress, and both sensors have finished a tick that began
    after the last run ended and requested nothing. Returns the seconds waited."""
    t = time.monotonic()
    deadline = t + timeout
    while time.monotonic() < deadline:
        active = instance.get_runs_count(RunsFilter(statuses=UNFINISHED_STATUSES))
        if not active:
            ends = [r.end_time for r in instance.get_run_records(limit=20) if r.end_time]
            last_end = max(ends, default=0.0)
            ticks = [latest_tick(instance, name) for name in (CHANGE_SENSOR, AUTOMATION_SENSOR)]
            if all(
                tick is not None and tick.status == TickStatus.SKIPPED and tick.timestamp > last_end
                for tick in ticks
            ):
                return time.monotonic() - t
        time.sleep(poll)
    raise TimeoutError(f"the deployment did not settle within {timeout}s: {describe_runs(instance)}")


def describe_runs(instance: dg.DagsterInstance, limit: int = 30) -> str:
    lines = []
    for rec in instance.get_run_records(limit=limit):
        run = rec.dagster_run
        lines.append(
            f"{run.run_id[:8]} {run.status.value} {run_kind(run)} {run.tags.get('dagster/partition', '')}"
        )
    return "\n".join(lines)


def run_kind(run: dg.DagsterRun) -> str:
    """'raw', 'dimensions', 'facts', 'chain' (raw through facts in one run), or 'mixed'/'other',
    from the run's asset selection."""
    keys = {k.to_user_string() for k in (run.asset_selection or ())}
    if any(k.startswith("raw/") for k in keys) and any(k.startswith(("dim_", "fact_")) for k in keys):
        return "chain"
    if keys and all(k.startswith("raw/") for k in keys):
        return "raw"
    if keys and all(k.startswith("dim_") for k in keys):
        return "dimensions"
    if keys and all(k.startswith("fact_") for k in keys):
        return "facts"
    return "mixed" if keys else "other"


def run_trigger(run: dg.DagsterRun) -> str:
    return run.tags.get("totesys/trigger") or run.tags.get(SENSOR_NAME_TAG) or "manual"


# --------------------------------------------------------------------------------------------------
# One source change, measured
# --------------------------------------------------------------------------------------------------


@dataclass
class RunTiming:
    run_id: str
    kind: str
    trigger: str
    sensor: str | None
    assets: list[str]
    partition: str | None
    status: str
    created: float  # seconds after the insert
    started: float | None
    ended: float | None


@dataclass
class ChangeMeasurement:
    sales_order_id: int
    inserted_at: str
    latency_s: float
    runs: list[RunTiming]
    stages: dict[str, float]  # milestones and durations of the chain (see `stage_breakdown`)
    change: str = "insert"  # or "in_place": an existing order changed, last_updated untouched

    def to_json(self) -> dict:
        return {
            "change": self.change,
            "sales_order_id": self.sales_order_id,
            "inserted_at": self.inserted_at,
            "latency_s": round(self.latency_s, 2),
            "stages_s": {k: round(v, 2) for k, v in self.stages.items()},
            "runs": [vars(r) for r in self.runs],
        }


def _warehouse_value(warehouse_url: str, query: str, sales_order_id: int) -> tuple | None:
    """The first row of `query` for one order (None before the warehouse has the table)."""
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        try:
            return conn.execute(query, (sales_order_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None


def fact_visible(warehouse_url: str, sales_order_id: int) -> bool:
    query = "SELECT 1 FROM fact_sales_order WHERE sales_order_id = %s LIMIT 1"
    return _warehouse_value(warehouse_url, query, sales_order_id) is not None


def current_units(warehouse_url: str, sales_order_id: int) -> int | None:
    """units_sold of the order in fact_sales_order_current (None while it is not there)."""
    query = "SELECT units_sold FROM fact_sales_order_current WHERE sales_order_id = %s"
    row = _warehouse_value(warehouse_url, query, sales_order_id)
    return row[0] if row else None


def _in_place_change(source_url: str) -> tuple[int, int, datetime]:
    """Change the newest sales order in place (units_sold + 1, last_updated left as it is), as the
    real source does; (its id, the new units_sold, its last_updated)."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        row = conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = "
            "(SELECT max(sales_order_id) FROM sales_order) RETURNING sales_order_id, units_sold, last_updated"
        ).fetchone()
    assert row is not None, "the source has no sales order to change"
    return row[0], row[1], row[2]


def measure_change(
    deployment: Deployment,
    instance: dg.DagsterInstance,
    *,
    timeout: float = 240,
    poll: float = 0.25,
    in_place: bool = False,
) -> ChangeMeasurement:
    """Insert one sales order at the source (stamped now), or with `in_place` change the newest one
    without touching its last_updated, and wait until fact_sales_order(_current) shows it; nothing
    is launched by hand. Raises TimeoutError after `timeout` seconds."""
    from totesys_assets.simulator import Simulator

    t0 = time.time()
    if in_place:
        order_id, units, at = _in_place_change(deployment.source_url)

        def visible() -> bool:
            return current_units(deployment.warehouse_url, order_id) == units
    else:
        at = utc_now_ms()
        order_id = Simulator(deployment.source_url).insert_sales_order(at=at)

        def visible() -> bool:
            return fact_visible(deployment.warehouse_url, order_id)

    deadline = time.monotonic() + timeout
    while not visible():
        if time.monotonic() > deadline:
            what = "its in-place change" if in_place else "it"
            raise TimeoutError(
                f"sales order {order_id}: {what} not in the warehouse after {timeout}s:\n{describe_runs(instance)}"
            )
        time.sleep(poll)
    t_visible = time.time()
    runs = runs_since(instance, t0)
    return ChangeMeasurement(
        sales_order_id=order_id,
        inserted_at=at.isoformat(timespec="milliseconds"),
        latency_s=t_visible - t0,
        runs=runs,
        stages=stage_breakdown(runs, t_visible - t0, at.date().isoformat()),
        change="in_place" if in_place else "insert",
    )


def runs_since(instance: dg.DagsterInstance, t0: float) -> list[RunTiming]:
    records = instance.get_run_records(RunsFilter(created_after=datetime.fromtimestamp(t0, UTC)))
    out = []
    for rec in sorted(records, key=lambda r: r.create_timestamp):
        run = rec.dagster_run
        out.append(
            RunTiming(
                run_id=run.run_id,
                kind=run_kind(run),
                trigger=run_trigger(run),
                sensor=run.tags.get(SENSOR_NAME_TAG),
                assets=sorted(k.to_user_string() for k in (run.asset_selection or ())),
                partition=run.tags.get("dagster/partition"),
                status=run.status.value,
                created=rec.create_timestamp.timestamp() - t0,
                started=rec.start_time - t0 if rec.start_time else None,
                ended=rec.end_time - t0 if rec.end_time else None,
            )
        )
    return out


# The change in one run (the change sensor's chain run), seconds after the change:
CHAIN_MILESTONES = ("chain_requested", "chain_started", "chain_done", "visible")
CHAIN_DURATIONS = ("chain_queue", "chain_run", "chain_done_to_visible")
# The change in three runs (raw by the change sensor, then automation's dimensions and facts):
MILESTONES = (
    "raw_requested",  # the change sensor created the raw run for the insert's day
    "raw_started",  # the run queue launched it (run worker up)
    "raw_done",
    "dims_requested",  # star_automation created the first dimension run
    "dims_started",
    "dims_done",  # the last dimension run requested before the fact run ended
    "facts_requested",  # star_automation created the fact run for the insert's day
    "facts_started",
    "visible",  # the poller saw the row in fact_sales_order
)
# Durations that do not overlap anything else.
DURATIONS = ("raw_queue", "raw_run", "dims_queue", "dims_run", "facts_queue", "facts_start_to_visible")


def stage_breakdown(runs: list[RunTiming], visible: float, day: str) -> dict[str, float]:
    """Milestones and durations of a change's way to the warehouse: one chain run, or the three
    runs insert -> raw -> dimensions -> facts -> visible.

    Milestones are seconds after the insert. They need not be in order: automation requests a
    dimension as soon as the raw *step* it depends on has materialised (before the raw run, with
    its other steps, ends) and a fact as soon as the dimension step has (while the dimension run's
    checks still run). Milestones whose run is missing are left out.
    """
    out: dict[str, float] = {}
    chain = next((r for r in runs if r.kind == "chain" and "fact_sales_order" in r.assets), None)
    if chain is not None:
        out["chain_requested"] = chain.created
        _put(out, "chain_started", chain.started)
        _put(out, "chain_done", chain.ended)
        out["visible"] = visible
        _spans(
            out,
            ("chain_queue", "chain_requested", "chain_started"),
            ("chain_run", "chain_started", "chain_done"),
            ("chain_done_to_visible", "chain_done", "visible"),
        )
        return out
    raw = next((r for r in reversed(runs) if r.kind == "raw" and r.partition == day), None)
    facts = next(
        (r for r in runs if r.kind == "facts" and "fact_sales_order" in r.assets and r.partition == day), None
    )
    dims = [r for r in runs if r.kind == "dimensions" and (facts is None or r.created <= facts.created)]
    if raw is not None:
        out["raw_requested"] = raw.created
        _put(out, "raw_started", raw.started)
        _put(out, "raw_done", raw.ended)
    if dims:
        out["dims_requested"] = dims[0].created
        _put(out, "dims_started", dims[0].started)
        ends = [d.ended for d in dims]
        _put(out, "dims_done", max(ends) if None not in ends else None)  # type: ignore[type-var]
    if facts is not None:
        out["facts_requested"] = facts.created
        _put(out, "facts_started", facts.started)
    out["visible"] = visible
    _spans(
        out,
        ("raw_queue", "raw_requested", "raw_started"),
        ("raw_run", "raw_started", "raw_done"),
        ("facts_queue", "facts_requested", "facts_started"),
        ("facts_start_to_visible", "facts_started", "visible"),
    )
    if dims and dims[0].started is not None:
        out["dims_queue"] = dims[0].started - dims[0].created
        runs_done = [d.ended - d.started for d in dims if d.started is not None and d.ended is not None]
        if runs_done:
            out["dims_run"] = sum(runs_done)
    return out


def _spans(out: dict[str, float], *spans: tuple[str, str, str]) -> None:
    """Each (name, from, to) whose two milestones are known: the seconds between them."""
    for name, a, b in spans:
        if a in out and b in out:
            out[name] = out[b] - out[a]


def _put(out: dict[str, float], key: str, value: float | None) -> None:
    if value is not None:
        out[key] = value


def format_runs(runs: list[RunTiming]) -> str:
    lines = [
        f"{'run':8} {'kind':10} {'trigger':20} {'partition':10} {'created':>8} {'started':>8} {'ended':>8}  assets"
    ]
    for r in runs:
        lines.append(
            f"{r.run_id[:8]:8} {r.kind:10} {r.trigger:20} {r.partition or '-':10} {r.created:8.1f} "
            f"{_f(r.started):>8} {_f(r.ended):>8}  {','.join(r.assets)}"
        )
    return "\n".join(lines)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --------------------------------------------------------------------------------------------------
# Embedded services for scripts (the tests use the conftest fixtures instead)
# --------------------------------------------------------------------------------------------------


@contextmanager
def embedded_services(workdir: Path) -> Iterator[tuple]:
    """(PgCluster, S3Endpoint) as the `pg` and `s3_server` fixtures provide them, for scripts."""
    import tempfile

    import pgserver

    from totesys_assets_tests.conftest import PgCluster, S3Endpoint, moto_server

    pg_path = tempfile.mkdtemp(prefix="tpg", dir="/tmp")  # unix socket paths must stay short
    server = pgserver.get_server(pg_path, cleanup_mode="delete")
    try:
        with moto_server() as endpoint:
            with patched_environ({**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL_S3": endpoint}):
                yield PgCluster(server=server, base_uri=server.get_uri()), S3Endpoint(endpoint)
    finally:
        server.cleanup()
        shutil.rmtree(pg_path, ignore_errors=True)
