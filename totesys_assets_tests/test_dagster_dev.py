"""The README's first run: `totesys-dev` from an empty TOTESYS_HOME and DAGSTER_HOME fills the warehouse.

Nobody launches anything: the automation sensor backfills the embedded demo's whole history (raw
and dimensions, then the facts), and the test waits until every dimension and fact holds the
source's full row count, then checks that no run failed and that the facts were loaded only after
the dimensions. The time to a full warehouse is printed and recorded (`record_property`).
The demo pace is off here (TOTESYS_DEMO_RATE=0) so that the source holds still while it is
compared; test_demo_pace.py covers the pace.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import dagster as dg
import psycopg
import pytest

from totesys_assets.specs import DIMENSION_NAMES
from totesys_assets_tests.conftest import REPO_ROOT

FULL_WAREHOUSE_TIMEOUT_S = 420  # generous for a loaded 2-core CI machine; the target is 2 minutes
# Warehouse table -> the source table whose row count it reaches on a first load.
SAME_COUNT = {
    "dim_staff": "staff",
    "dim_location": "address",
    "dim_design": "design",
    "dim_currency": "currency",
    "dim_counterparty": "counterparty",
    "dim_payment_type": "payment_type",
    "dim_transaction": "transaction",
    "fact_sales_order": "sales_order",
    "fact_purchase_order": "purchase_order",
    "fact_payment": "payment",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: bytes | None = None) -> dict | str:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
    return json.loads(body) if body.startswith("{") else body


ASSETS_QUERY = json.dumps({"query": "{ assetNodes { assetKey { path } groupName isPartitioned } }"}).encode()
AUTOMATION_QUERY = json.dumps(
    {
        "query": """{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
            ... on RepositoryLocation { repositories { name
              sensors { name sensorState { status } }
              schedules { name scheduleState { status } } } } } } } } }"""
    }
).encode()


def _automation(port: int) -> tuple[dict, dict]:
    data = _get(f"http://127.0.0.1:{port}/graphql", AUTOMATION_QUERY)["data"]["workspaceOrError"]
    repo = data["locationEntries"][0]["locationOrLoadError"]["repositories"][0]
    sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    return sensors, schedules


def _counts(url: str, tables) -> dict[str, int]:
    out = {}
    with psycopg.connect(url, connect_timeout=5) as conn:
        for table in tables:
            exists = conn.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()[0]
            out[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] if exists else 0  # noqa: S608 (fixed names)
    return out


@pytest.mark.slow
def test_totesys_dev_fills_the_warehouse_by_itself_from_an_empty_state(tmp_path, record_property, capsys):
    port = _free_port()
    home = tmp_path / "totesys"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_", "DAGSTER_"))}
    env.update(TOTESYS_HOME=str(home), TOTESYS_DEMO_RATE="0")
    totesys_dev = os.path.join(os.path.dirname(sys.executable), "totesys-dev")
    log_path = tmp_path / "totesys_dev.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [totesys_dev, "-p", str(port), "-h", "127.0.0.1"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    report = []
    try:
        deadline = time.monotonic() + FULL_WAREHOUSE_TIMEOUT_S
        nodes = []
        while time.monotonic() < deadline and proc.poll() is None and not nodes:
            try:
                nodes = _get(f"http://127.0.0.1:{port}/graphql", ASSETS_QUERY)["data"]["assetNodes"]
            except (OSError, KeyError, TypeError):
                time.sleep(1)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        report.append(f"UI serving after {time.monotonic() - t0:.1f}s")
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert len(keys) == 33  # 11 observable sources (totesys/<table>), 11 raw, 8 dimensions, 3 facts
        assert all(n["isPartitioned"] for n in nodes if n["groupName"] in ("raw", "facts"))
        sensors, schedules = _automation(port)
        assert schedules == {"raw_refresh_schedule": "RUNNING"}  # no demo_activity at rate 0
        assert sensors == dict.fromkeys(
            ["source_change_sensor", "star_automation", "run_failure_alerts"], "RUNNING"
        )

        # The instance lives under TOTESYS_HOME, in the embedded PostgreSQL (totesys-dev wrote it).
        dagster_home = home / "dagster_home"
        assert (dagster_home / "dagster.yaml").read_text().startswith("# written by totesys-dev")
        base = f"postgresql://postgres:@/{{}}?host={home / 'pg'}"
        source_counts = _counts(base.format("totesys"), set(SAME_COUNT.values()))
        counts: dict[str, int] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                counts = _counts(base.format("warehouse"), SAME_COUNT)
            except psycopg.OperationalError:  # the warehouse database is created by the first load
                counts = {}
            if counts and all(counts[w] == source_counts[s] for w, s in SAME_COUNT.items()):
                break
            time.sleep(3)
        full_after = time.monotonic() - t0
        report.append(f"full warehouse after {full_after:.1f}s: {counts}")
        record_property("seconds_to_full_warehouse", round(full_after, 1))
        assert {w: counts.get(w) for w in SAME_COUNT} == {w: source_counts[s] for w, s in SAME_COUNT.items()}

        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            runs = instance.get_runs()
            report += [f"  {r.job_name} {r.status.value} {sorted(r.asset_selection or [])[:3]}" for r in runs]
            assert not [
                r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            ]
            backfills = instance.get_backfills()
            assert backfills, "the history was not requested as a backfill"
            facts = [
                r for r in runs if r.asset_selection and dg.AssetKey("fact_payment") in r.asset_selection
            ]
            # No run loading a fact starts before every dimension was loaded once (its first
            # materialisation, i.e. its rows committed; the dimensions' run may still be running
            # its checks then). (Runs still queued when the warehouse filled up have no start.)
            records = [instance.get_run_record_by_id(r.run_id) for r in facts]
            first_fact = min((rec.start_time or float("inf")) for rec in records if rec)
            dims_loaded = max(
                instance.fetch_materializations(dg.AssetKey(d), limit=1, ascending=True).records[0].timestamp
                for d in DIMENSION_NAMES
            )
            assert first_fact >= dims_loaded, "a fact load started before the dimensions were loaded"
    except BaseException:
        report.append("--- totesys-dev log (tail) ---\n" + log_path.read_text()[-4000:])
        raise
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(
            [sys.executable, "-m", "totesys_assets.embedded", "stop"],
            env=env,
            capture_output=True,
            timeout=60,
        )
        with capsys.disabled():
            print("\n" + "\n".join(report))


def test_totesys_dev_names_the_code_location_unless_the_user_does():
    """From any directory (outside the clone no pyproject names it), and never over the user's choice."""
    from totesys_assets.dev import dev_args

    assert dev_args([]) == ["dev", "-m", "totesys_assets.definitions"]
    assert dev_args(["-p", "3001"]) == ["dev", "-m", "totesys_assets.definitions", "-p", "3001"]
    assert dev_args(["-w", "workspace.yaml"]) == ["dev", "-w", "workspace.yaml"]
    assert dev_args(["--module-name=other"]) == ["dev", "--module-name=other"]
