"""The pipeline under test, run through Dagster exactly as the README's headless sequence does.

raw range (one single run, `BackfillPolicy.single_run()`) -> dimensions -> facts range, with the
asset checks, via `dg.execute_job` (as `dagster asset materialize` runs them) on one Dagster
instance per scale (the incremental run must see the full load's materialisations, as a
deployment's instance would).

Each run's time is split from Dagster's own event log into:
  * ours: STEP_START -> STEP_OUTPUT of every step (inputs + asset or check function) plus the time
    inside the raw IO manager's `handle_output` (measured by wrapping it);
  * Dagster: the rest of the run's wall time (planning and the per-partition
    ASSET_MATERIALIZATION_PLANNED events before the run starts, the per-partition
    ASSET_MATERIALIZATION events, step and run bookkeeping).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from totesys_assets.partitions import partition_tags
from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.lake import RawLakeIOManager
from totesys_assets.specs import SOURCE_TABLE_NAMES, WAREHOUSE_TABLES
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import DIMENSION_CHECKS, FACT_CHECKS, star_checks

BENCH_JOB = "bench_pipeline"
CHECK_STEPS = {DIMENSION_CHECKS, FACT_CHECKS}
GROUPS = {"raw": "raw", "dimensions": "dimensions", "facts": "facts"}

# --- time inside the IO manager (ours), per step ------------------------------------------------

# (method, step key) -> seconds inside RawLakeIOManager.handle_output / load_input
_io_seconds: dict[tuple[str, str], float] = defaultdict(float)
_io_lock = threading.Lock()
_io_timer_installed = False


def _step_key(context: Any) -> str:
    """The step an IO manager call belongs to (InputContext has no `step_key`)."""
    with contextlib.suppress(Exception):
        return context.step_key
    with contextlib.suppress(Exception):
        return context.step_context.step.key
    return "?"


def _install_io_timer() -> None:
    global _io_timer_installed
    if _io_timer_installed:
        return
    for method in ("handle_output", "load_input"):
        original = getattr(RawLakeIOManager, method)

        def wrapper(self, context, *args, _original=original, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _original(self, context, *args, **kwargs)
            finally:
                with _io_lock:
                    _io_seconds[(_method, _step_key(context))] += time.perf_counter() - started

        functools.update_wrapper(wrapper, original)
        setattr(RawLakeIOManager, method, wrapper)
    _io_timer_installed = True


def _take_io_seconds() -> dict[tuple[str, str], float]:
    with _io_lock:
        out = dict(_io_seconds)
        _io_seconds.clear()
    return out


# --- runs ---------------------------------------------------------------------------------------


def all_definitions(with_checks: bool) -> list:
    return [*raw_assets, *star_assets, *(star_checks if with_checks else [])]


def bench_job(with_checks: bool) -> dg.JobDefinition:
    """The code location's assets (and checks) as one asset job, run in process as in a deployment.

    Reconstructable (`build_reconstructable_job`), so a run goes through `dg.execute_job` as the
    CLI's `dagster asset materialize` and a run worker do: unlike `dg.materialize`, that does not
    keep every step output in memory for the result (the raw step's 8,184 day frames at ×100, which
    made the bench process hold ~450 MB more than a run does, during the run and after it).
    """
    return bench_definitions(with_checks).resolve_job_def(BENCH_JOB)


def bench_definitions(with_checks: bool) -> dg.Definitions:
    return dg.Definitions(
        assets=[*raw_assets, *star_assets],
        asset_checks=star_checks if with_checks else [],
        jobs=[dg.define_asset_job(BENCH_JOB, selection=dg.AssetSelection.all())],
        resources=build_resources(),
        executor=dg.in_process_executor,
    )


def run_config(log_level: str) -> dict[str, Any]:
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def breakdown(instance: dg.DagsterInstance, run_id: str, wall: float, called_at: float) -> dict[str, Any]:
    """Split a run's wall time into our code and Dagster's, from the run's event log."""
    io_by_step = _take_io_seconds()
    logs = instance.all_logs(run_id)
    counts: Counter = Counter()
    steps: dict[str, dict[str, float]] = defaultdict(dict)
    pipeline_start = None
    for entry in logs:
        event = entry.dagster_event
        if event is None:
            continue
        kind = event.event_type_value
        counts[kind] += 1
        if kind == "PIPELINE_START":
            pipeline_start = entry.timestamp
        step = entry.step_key
        if step is None:
            continue
        marks = steps[step]
        if kind == "STEP_START":
            marks["start"] = entry.timestamp
        elif kind == "STEP_OUTPUT":
            marks.setdefault("output", entry.timestamp)
            marks["last_output"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            marks["end"] = entry.timestamp
    per_step = {}
    ours_total = 0.0
    for step, marks in steps.items():
        if "start" not in marks:
            continue
        # A checks step yields its results as they finish (one output each): all of it is ours.
        output = marks.get("last_output" if step in CHECK_STEPS else "output")
        compute = (output or marks.get("end", marks["start"])) - marks["start"]
        # load_input runs before STEP_OUTPUT (already inside `compute`); handle_output after it.
        handle = io_by_step.get(("handle_output", step), 0.0)
        ours = compute + handle
        per_step[step] = {
            "step_s": round(marks.get("end", marks["start"]) - marks["start"], 4),
            "ours_s": round(ours, 4),
            "handle_output_s": round(handle, 4),
            "load_input_s": round(io_by_step.get(("load_input", step), 0.0), 4),
        }
        ours_total += ours
    planning = (pipeline_start - called_at) if pipeline_start else None
    return {
        "wall_s": wall,
        "ours_s": ours_total,
        "dagster_s": max(0.0, wall - ours_total),
        "dagster_share": max(0.0, wall - ours_total) / wall if wall else None,
        "planning_s": planning,
        "events": dict(counts),
        "partition_materializations": counts.get("ASSET_MATERIALIZATION", 0),
        "steps": dict(sorted(per_step.items(), key=lambda kv: kv[1]["step_s"], reverse=True)),
    }


class DagsterRunner:
    """Runs groups of the code location's assets on one instance and times them."""

    def __init__(self, instance: dg.DagsterInstance, *, with_checks: bool = True, log_level: str = "WARNING"):
        _install_io_timer()
        self.instance = instance
        self.job = dg.build_reconstructable_job(
            __name__, bench_job.__name__, reconstructable_args=(with_checks,)
        )
        self.asset_graph = bench_definitions(with_checks).resolve_asset_graph()
        self.config = run_config(log_level)

    def run(self, group: str, first: str | None = None, last: str | None = None) -> dict[str, Any]:
        """Materialise a group (raw/dimensions/facts), over a partition range if given."""
        keys = sorted(dg.AssetSelection.groups(GROUPS[group]).resolve(self.asset_graph))
        return self.run_keys(keys, first, last)

    def run_keys(
        self, keys: list[dg.AssetKey], first: str | None = None, last: str | None = None
    ) -> dict[str, Any]:
        """Materialise these assets (and their checks) in one run, over a partition range if given."""
        tags: dict[str, str] = {}
        if first is not None:
            assert last is not None
            tags = partition_tags(first, last)
        _take_io_seconds()
        called_at = time.time()
        started = time.perf_counter()
        result = dg.execute_job(
            self.job,
            instance=self.instance,
            run_config=self.config,
            tags=tags,
            asset_selection=keys,
            raise_on_error=True,
        )
        wall = time.perf_counter() - started
        out = breakdown(self.instance, result.run_id, wall, called_at)
        out["run_id"] = result.run_id
        out["partitions"] = (first, last)
        failed_checks = [
            f"{ev.asset_key.to_user_string()}:{ev.check_name}"
            for ev in result.get_asset_check_evaluations()
            if not ev.passed
        ]
        out["failed_checks"] = failed_checks
        return out


# --- source and warehouse facts for the report -----------------------------------------------------


def source_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
            for t in SOURCE_TABLE_NAMES
        }


def warehouse_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]  # type: ignore[index]
            for t in WAREHOUSE_TABLES
        }


def changed_days(url: str, since: datetime) -> list[str]:
    """The partition days (UTC dates of last_updated) of every row version written after `since`."""
    query = sql.SQL(" UNION ").join(
        sql.SQL("SELECT DISTINCT last_updated::date AS d FROM {} WHERE last_updated > %s").format(
            sql.Identifier(t)
        )
        for t in SOURCE_TABLE_NAMES
    )
    with psycopg.connect(url) as conn:
        rows = conn.execute(query, [since] * len(SOURCE_TABLE_NAMES)).fetchall()  # type: ignore[arg-type]
    return sorted(d.isoformat() for (d,) in rows)


def contiguous_ranges(days: list[str]) -> list[tuple[str, str]]:
    """['2024-11-14', '2024-11-15', '2024-11-18'] -> [('2024-11-14', '2024-11-15'), ('2024-11-18', ...)]."""
    out: list[list[str]] = []
    for day in sorted(days):
        if out and date.fromisoformat(day) - date.fromisoformat(out[-1][1]) == timedelta(days=1):
            out[-1][1] = day
        else:
            out.append([day, day])
    return [(a, b) for a, b in out]
