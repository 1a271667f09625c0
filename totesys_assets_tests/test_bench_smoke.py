"""Smoke test of the throughput benchmark (bench/run.py) at ×1 on a short history.

It checks that the benchmark runs end to end and writes its JSON with every stage; it asserts no
timings (speed is measured by the benchmark, not by tests). The pandas/pg8000 baseline runs when
the `bench` extra is installed and is recorded as skipped otherwise (CI installs only `.[dev]`).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench" / "run.py"


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_benchmark_runs_at_x1_and_writes_every_stage(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, str(BENCH), "--scale", "1", "--days", "5", "--limit-repeats", "1",
        "--workdir", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"bench/run.py failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "full: end to end" in proc.stdout  # the printed table

    report = json.loads(out.read_text())
    has_baseline_deps = all(_importable(m) for m in ("pandas", "pg8000"))
    (scale,) = report["scales"]
    assert scale["tag"] == "x1" and scale["source_rows"] > 0
    stages = {(s["group"], s["stage"].split(" (")[0]) for s in scale["stages"]}
    expected = {
        ("seed", "simulator seed_history"),
        ("limit", "extract"),
        ("limit", "load"),
        ("limit", "extract + load"),
        ("full", "raw"),
        ("full", "dimensions"),
        ("full", "facts"),
        ("full", "end to end"),
        ("incremental", "raw"),
        ("incremental", "dimensions"),
        ("incremental", "facts"),
        ("incremental", "end to end"),
    }
    if has_baseline_deps:
        expected |= {("baseline", s) for s in ("extract", "dimensions", "facts", "end to end")}
        assert report["baseline_skipped"] is None
    else:
        assert "not installed" in report["baseline_skipped"]
    assert expected <= stages, f"missing stages: {sorted(expected - stages)}"
    for stage in scale["stages"]:
        assert stage["seconds"] >= 0 and stage["rows"] >= 0
    full = {s["stage"]: s for s in scale["stages"] if s["group"] == "full"}
    for group in ("raw", "dimensions", "facts"):
        assert full[group]["detail"]["failed_checks"] == []
    # the pipeline really loaded the warehouse, and the incremental run added the new versions
    after_full, after_inc = scale["warehouse_rows_after_full"], scale["warehouse_rows_after_incremental"]
    assert all(n > 0 for n in after_full.values())
    assert sum(after_inc.values()) >= sum(after_full.values())
    assert report["table"] and report["peak_rss_mb"]["self"] > 0
