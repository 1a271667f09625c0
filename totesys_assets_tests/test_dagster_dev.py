"""`dagster dev` starts on the embedded default and serves the code location."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from totesys_assets_tests.conftest import REPO_ROOT


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
              sensors { name sensorState { status ticks(limit: 5) { status error { message stack causes { message stack } } } } }
              schedules { name scheduleState { status } } } } } } } } }"""
    }
).encode()


def _automation(port: int) -> tuple[dict, dict]:
    data = _get(f"http://127.0.0.1:{port}/graphql", AUTOMATION_QUERY)["data"]["workspaceOrError"]
    repo = data["locationEntries"][0]["locationOrLoadError"]["repositories"][0]
    sensors = {s["name"]: s["sensorState"] for s in repo["sensors"]}
    schedules = {s["name"]: s["scheduleState"]["status"] for s in repo["schedules"]}
    return sensors, schedules


@pytest.mark.slow
def test_dagster_dev_starts_on_the_embedded_default(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "WAREHOUSE_"))}
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), TOTESYS_HOME=str(tmp_path / "totesys"))
    os.makedirs(env["DAGSTER_HOME"])
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    proc = subprocess.Popen(
        [dagster, "dev", "-p", str(port), "-h", "127.0.0.1"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = _get(f"http://127.0.0.1:{port}/server_info")
                nodes = _get(f"http://127.0.0.1:{port}/graphql", ASSETS_QUERY)["data"]["assetNodes"]
                if nodes:
                    break
            except (OSError, KeyError, TypeError):
                pass
            time.sleep(1)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:] if proc.stdout else ""
        assert info and "dagster_webserver_version" in info
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert len(keys) == 22
        assert {f"raw/{t}" for t in ("sales_order", "payment", "staff")} <= keys
        assert {"dim_date", "dim_staff", "fact_sales_order", "fact_purchase_order", "fact_payment"} <= keys
        assert all(n["isPartitioned"] for n in nodes if n["groupName"] in ("raw", "facts"))

        # Schedules and sensors run by default; the change sensor's first tick starts and seeds the
        # embedded source inside dagster dev and succeeds.
        ticks = []
        while time.monotonic() < deadline:
            sensors, schedules = _automation(port)
            ticks = sensors["source_change_sensor"]["ticks"]
            if any(t["status"] in ("SUCCESS", "SKIPPED", "FAILURE") for t in ticks):
                break
            time.sleep(2)
        assert schedules == {"raw_refresh_schedule": "RUNNING", "demo_activity": "RUNNING"}
        assert {n: st["status"] for n, st in sensors.items()} == {
            "source_change_sensor": "RUNNING", "star_automation": "RUNNING", "run_failure_alerts": "RUNNING",
        }  # fmt: skip
        assert any(t["status"] == "SUCCESS" for t in ticks), ticks
        assert (tmp_path / "totesys" / "pg" / "PG_VERSION").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _stop_embedded(env)


def _stop_embedded(env: dict) -> None:
    """The embedded PostgreSQL outlives dagster dev by design; the test stops it."""
    subprocess.run(
        [sys.executable, "-m", "totesys_assets.embedded", "stop"], env=env, capture_output=True, timeout=60
    )
