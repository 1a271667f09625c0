"""Source change -> warehouse latency under the real daemon (p50/p95 over N changes).

The same deployment as totesys_assets_tests/test_e2e_daemon.py (machinery in
totesys_assets_tests/e2e_support.py): `dagster dev` on deploy/dagster.local.yaml with Dagster's
storage in an embedded PostgreSQL, a simulator source, a warehouse and a moto S3 lake; the
warehouse is caught up headlessly first. Then, N times: insert one sales order at the source and
time how long until its row is in fact_sales_order (nothing launched by hand); the deployment is
left to settle between changes so each change is measured on its own.

    python bench/latency.py                 # N=10, sensor interval 4 s, automation interval 5 s
    python bench/latency.py -n 20 --automation-interval 10 --out bench/results/latency.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from totesys_assets_tests.e2e_support import (  # noqa: E402
    CHAIN_DURATIONS,
    CHAIN_MILESTONES,
    DURATIONS,
    MILESTONES,
    DagsterDev,
    catch_up_headlessly,
    embedded_services,
    format_runs,
    init_instance,
    measure_change,
    prepare_deployment,
    wait_until_quiet,
)


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "-n", "--changes", type=int, default=10, help="source changes to measure (default 10)"
    )
    parser.add_argument(
        "--sensor-interval", type=int, default=4, help="TOTESYS_SENSOR_INTERVAL_S (default 4)"
    )
    parser.add_argument(
        "--automation-interval", type=int, default=5, help="TOTESYS_AUTOMATION_INTERVAL_S (default 5)"
    )
    parser.add_argument("--days", type=int, default=3, help="days of seeded history (default 3)")
    parser.add_argument("--timeout", type=float, default=300, help="per change, seconds (default 300)")
    parser.add_argument(
        "--keep-crons",
        action="store_true",
        help="keep the raw refresh schedule and the automation heartbeat on their real crons "
        "(default: moved out of the way, so only the change sensor and automation act)",
    )
    parser.add_argument(
        "--inserts-only",
        action="store_true",
        help="only new orders (default: every other change is an in-place update of an existing "
        "order that leaves last_updated alone, as the real source does)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "latency.json")
    args = parser.parse_args(argv)

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="totesys_latency_") as tmp,
        embedded_services(Path(tmp)) as (pg, s3),
    ):
        workdir = Path(tmp)
        deployment = prepare_deployment(
            new_db=pg.new_db,
            new_bucket=s3.new_bucket,
            s3_endpoint=s3.endpoint_url,
            workdir=workdir,
            days=args.days,
            sensor_interval_s=args.sensor_interval,
            automation_interval_s=args.automation_interval,
            keep_crons=args.keep_crons,
        )
        setup = {}
        t = time.monotonic()
        init_instance(deployment)
        setup["init_instance_s"] = time.monotonic() - t
        setup["headless_catch_up_s"] = catch_up_headlessly(deployment)
        dev = DagsterDev(deployment, workdir / "dagster_dev.log")
        measurements = []
        try:
            setup["dagster_dev_start_s"] = dev.start()
            with deployment.instance() as instance:
                setup["first_settle_s"] = wait_until_quiet(instance, timeout=300)
                for i in range(args.changes):
                    in_place = not args.inserts_only and i % 2 == 1
                    m = measure_change(deployment, instance, timeout=args.timeout, in_place=in_place)
                    measurements.append(m)
                    stages = " ".join(f"{k}={v:.1f}" for k, v in m.stages.items())
                    print(f"change {i + 1}/{args.changes} ({m.change}): order {m.sales_order_id} visible after "
                          f"{m.latency_s:.1f}s  [{stages}]", flush=True)  # fmt: skip
                    print(format_runs(m.runs), flush=True)
                    wait_until_quiet(instance, timeout=300)
        except BaseException:
            print(dev.log_tail(), file=sys.stderr)
            raise
        finally:
            leftovers = dev.stop()
        if leftovers:
            print(f"WARNING: killed {len(leftovers)} leftover processes: {leftovers}", file=sys.stderr)

    latencies = [m.latency_s for m in measurements]
    summary = summarize(latencies)
    stage_summary = {
        stage: summarize(values)
        for stage in (*CHAIN_MILESTONES, *MILESTONES, *CHAIN_DURATIONS, *DURATIONS)
        if (values := [m.stages[stage] for m in measurements if stage in m.stages])
    }

    print()
    print(f"source change -> warehouse latency over {len(latencies)} changes "
          f"(sensor {args.sensor_interval}s, automation {args.automation_interval}s)")  # fmt: skip
    print(f"{'':24} {'p50':>7} {'p95':>7} {'min':>7} {'max':>7} {'mean':>7}")
    rows = [
        ("end to end", summary),
        ("milestones (s after insert)", None),
        *((f"  {k}", v) for k, v in stage_summary.items() if k in (*CHAIN_MILESTONES, *MILESTONES)),
        ("durations (s)", None),
        *((f"  {k}", v) for k, v in stage_summary.items() if k in (*CHAIN_DURATIONS, *DURATIONS)),
    ]
    for name, s in rows:
        if s is None:
            print(name)
        else:
            print(
                f"{name:24} {s['p50']:7.1f} {s['p95']:7.1f} {s['min']:7.1f} {s['max']:7.1f} {s['mean']:7.1f}"
            )

    result = {
        "benchmark": "source change -> warehouse latency (dagster dev, deploy/dagster.local.yaml)",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {"platform": platform.platform(), "python": platform.python_version()},
        "settings": {
            "changes": args.changes,
            "sensor_interval_s": args.sensor_interval,
            "automation_interval_s": args.automation_interval,
            "seeded_days": args.days,
            "crons": "real" if args.keep_crons else "moved out of the way (QUIET_CRONS)",
        },
        "setup_s": setup,
        "latency_s": summary,
        "latency_by_change_s": {
            kind: summarize([m.latency_s for m in measurements if m.change == kind])
            for kind in sorted({m.change for m in measurements})
        },
        "stages_s": stage_summary,
        "changes": [m.to_json() for m in measurements],
        "total_s": time.monotonic() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
