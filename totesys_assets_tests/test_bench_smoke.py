"""Smoke test of the throughput benchmark (bench/run.py) at ×1 on a short history.

It checks that the benchmark runs end to end and that its JSON reports what bench/README.md says:
every stage with its columns, every source row handled, and a warehouse holding the source. It
asserts no timings (speed is measured by the benchmark, not by tests). The pandas/pg8000 baseline
runs when the `bench` extra is installed and is recorded as skipped otherwise (CI installs only
`.[dev]`).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_assets.star.assets import DIMENSIONS, FACTS

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "bench" / "run.py"


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.slow
def test_benchmark_runs_at_x1_and_reports_every_stage_and_the_loaded_warehouse(tmp_path):
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
    assert report["complete"] is True
    assert {"commit", "uncommitted"} <= set(report["code"])  # ties the result to the code (bench/README)
    (scale,) = report["scales"]
    assert scale["tag"] == "x1"
    counts, rows = scale["source_counts"], scale["source_rows"]
    assert set(counts) == set(SOURCE_TABLES) and all(n > 0 for n in counts.values())
    assert rows == sum(counts.values())

    stages = {(s["group"], s["stage"].split(" (")[0]): s for s in scale["stages"]}
    expected = {
        ("seed", "simulator seed_history"),
        ("limit", "extract"),
        ("limit", "load"),
        ("limit", "extract + load"),
        ("full", "raw"),
        ("full", "dimensions"),
        ("full", "facts"),
        ("full", "end to end"),
        ("incremental", "detector"),
        ("incremental", "one run"),
        ("incremental", "end to end"),
        ("detector", "whole history"),
    }
    if has_baseline_deps:
        expected |= {("baseline", s) for s in ("extract", "dimensions", "facts", "end to end")}
        assert report["baseline_skipped"] is None
        assert report["baseline"]["source_counts"] == counts  # same seed and scale: the same source
    else:
        assert "not installed" in report["baseline_skipped"]
    assert expected <= set(stages), f"missing stages: {sorted(expected - set(stages))}"

    # every row of the table has the README's columns; seed, limit, full, baseline and detector
    # stages each handled every source row, the other incremental ones the new row versions
    columns = {"rows", "seconds", "rows_per_s", "ratio_to_limit", "ratio_to_baseline"}
    new_versions = stages[("incremental", "one run")]["rows"]
    assert new_versions > 0
    for (group, name), stage in stages.items():
        assert columns <= set(stage), (group, name)
        # (the detector fingerprints history: every source row)
        handled = new_versions if group == "incremental" and name != "detector" else rows
        assert stage["rows"] == handled, (group, name)
    for name in ("raw", "dimensions", "facts", "end to end"):
        assert stages[("full", name)]["ratio_to_limit"] is not None
        if has_baseline_deps:
            assert stages[("full", name)]["ratio_to_baseline"] is not None
    runs = [("full", "raw"), ("full", "dimensions"), ("full", "facts"), ("incremental", "one run")]
    for group, name in runs:
        assert {"peak_rss_mb", "dagster_share"} <= set(stages[(group, name)]), (group, name)
        detail = stages[(group, name)]["detail"]
        assert detail["failed_checks"] == [], (group, name)
        assert {"steps", "events", "planning_s"} <= set(detail), (group, name)
    # the incremental run carries the changed days through raw, dimensions and facts at once
    steps = set(stages[("incremental", "one run")]["detail"]["steps"])
    assert {"raw_extract", "facts_load"} <= steps, steps

    # the warehouse holds the source: one dimension row per source row of its main table and, a
    # fresh source holding one version of each row, one fact row per source row
    after_full, after_inc = scale["warehouse_rows_after_full"], scale["warehouse_rows_after_incremental"]
    assert set(after_full) == set(WAREHOUSE_TABLES)
    for table in [*DIMENSIONS, *FACTS]:
        assert after_full[table.name] == counts[table.sources[0]], table.name
    assert after_full["dim_date"] > 0
    # the incremental run added at most one warehouse row per new source row version, and some
    grown = {t: after_inc[t] - after_full[t] for t in after_full if t != "dim_date"}
    assert all(n >= 0 for n in grown.values()) and 0 < sum(grown.values()) <= new_versions
    assert report["table"] and report["peak_rss_mb"]["self"] > 0
