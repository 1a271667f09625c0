"""Throughput benchmark of the totesys_assets pipeline, on one machine, in one run.

For each scale factor: generate the source with the simulator, measure the physical limit on the
same databases (bare ADBC extract + load), run the full-history pipeline through Dagster
(raw backfill -> dimensions -> facts, with the asset checks), then advance the source by one
business hour and time the incremental run. A seed-style baseline (pandas + pg8000 fetchall,
CSV lake, pandas transforms, row-by-row INSERTs) runs once at a small scale (×1) and its per-row
rate is extrapolated to the other scales. Prints one table and writes it as JSON.

    python bench/run.py --scale 1                       # ~3 min: the full 2-year history at the real rate
    python bench/run.py --scale 1 --scale 100           # incremental cost at two history sizes
    python bench/run.py --scale 1 --days 20             # the CI smoke test (seconds)
    python bench/run.py --scale 10 --profile            # + cProfile of every pipeline stage

See bench/README.md for what each stage measures and how the ratios are defined.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

warnings.simplefilter("ignore")  # Dagster's beta/preview/deprecation warnings are not results

import dagster as dg  # noqa: E402
import psycopg  # noqa: E402
from measure import Meter, RssSampler, max_rss_mb, profile_text  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent
DEFAULT_END = datetime(2024, 11, 15, 18, 0)
FIRST_PARTITION = datetime(2022, 11, 3)
SIM_DEFAULT_START = datetime(2022, 11, 3, 14, 20, 49, 962000)  # the real seed (simulator default)

_t0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _t0:7.1f}s] {message}", file=sys.stderr, flush=True)


def scale_tag(scale: float) -> str:
    return f"x{scale:g}"


# --- infrastructure: PostgreSQL (pgserver) and the lake (folder or moto S3) -----------------------


@dataclass
class Infra:
    base_uri: str
    lake_root: Path | None  # local lake folder (None with --s3)
    s3_client: Any = None
    s3_endpoint: str | None = None
    server_pid: int | None = None
    created_dbs: list[str] | None = None

    def url(self, dbname: str) -> str:
        return urlunsplit(urlsplit(self.base_uri)._replace(path=f"/{dbname}"))

    def new_db(self, name: str) -> str:
        name = f"{name}_{os.getpid()}"
        with psycopg.connect(self.base_uri, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        if self.created_dbs is not None:
            self.created_dbs.append(name)
        return self.url(name)

    def lake_url(self, name: str) -> str:
        if self.s3_client is not None:
            bucket = f"bench-{name.replace('.', '-').replace('_', '-')}-{os.getpid()}".lower()
            self.s3_client.create_bucket(Bucket=bucket)
            return f"s3://{bucket}/totes"
        assert self.lake_root is not None
        path = self.lake_root / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)


@contextlib.contextmanager
def infrastructure(args: argparse.Namespace, workdir: Path) -> Iterator[Infra]:
    server = None
    moto = None
    saved_env = dict(os.environ)
    try:
        if args.pg_url:
            base_uri, pid = args.pg_url, None
        else:
            import pgserver

            if args.pg_dir:
                server = pgserver.get_server(Path(args.pg_dir), cleanup_mode=None)
            else:
                # unix socket paths must stay short, so the cluster lives directly under /tmp
                pg_path = Path(tempfile.mkdtemp(prefix="bpg", dir="/tmp"))
                server = pgserver.get_server(pg_path, cleanup_mode="delete")
            base_uri, pid = server.get_uri(), server.get_pid()
        infra = Infra(base_uri=base_uri, lake_root=workdir / "lake", server_pid=pid, created_dbs=[])
        if args.s3:
            import boto3
            from moto.server import ThreadedMotoServer

            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            moto.start()
            host, port = moto.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            os.environ.update(
                {
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_REGION": "us-east-1",
                    "AWS_ENDPOINT_URL_S3": endpoint,
                }
            )
            infra.s3_client = boto3.client("s3", endpoint_url=endpoint)
            infra.s3_endpoint = endpoint
            infra.lake_root = None
        yield infra
        if (args.pg_dir or args.pg_url) and not args.keep:
            with psycopg.connect(base_uri, autocommit=True) as conn:
                for name in infra.created_dbs or []:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if moto is not None:
            moto.stop()
        if server is not None and not args.pg_dir:
            server.cleanup()
        os.environ.clear()
        os.environ.update(saved_env)


# --- stages -------------------------------------------------------------------------------------


def stage_row(group: str, stage: str, rows: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "group": group,
        "stage": stage,
        "rows": rows,
        "seconds": round(seconds, 4),
        "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        # 1-minute load average when the stage ended: other work on the machine skews timings
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        **extra,
    }


def run_baseline(args, infra: Infra, meter: Meter, start: datetime, end: datetime) -> dict[str, Any]:
    import baseline as bl

    from totesys_assets.resources.warehouse import WarehouseResource
    from totesys_assets.simulator import Simulator

    scale = args.baseline_scale
    tag = scale_tag(scale)
    log(f"baseline {tag}: seeding its own source")
    src = infra.new_db(f"bench_baseline_{tag.replace('.', '_')}_src")
    wh = infra.new_db(f"bench_baseline_{tag.replace('.', '_')}_wh")
    sim = Simulator(src, seed=args.seed, scale=scale)
    sim.create_schema()
    counts = sim.seed_history(start=start, end=end)
    rows = sum(counts.values())
    WarehouseResource(url=wh).ensure_schema()
    if infra.s3_client is not None:
        bucket = f"bench-baseline-{os.getpid()}"
        infra.s3_client.create_bucket(Bucket=bucket)
        lake = bl.Lake(s3_client=infra.s3_client, bucket=bucket, prefix="totes")
    else:
        assert infra.lake_root is not None
        lake = bl.Lake(root=infra.lake_root / "baseline")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    stages = []
    for stage in ("extract", "dimensions", "facts"):
        with meter.measure(f"baseline-{tag}-{stage}") as m:
            detail = bl.run_stage(stage, src, wh, lake, stamp)
        log(f"baseline {tag} {stage}: {m.seconds:.1f}s")
        stages.append(stage_row("baseline", stage, rows, m.seconds, peak_rss_mb=m.peak_rss_mb, detail=detail))
    total = sum(s["seconds"] for s in stages)
    stages.append(
        stage_row(
            "baseline",
            "end to end",
            rows,
            total,
            peak_rss_mb=max(s["peak_rss_mb"] or 0 for s in stages),
        )
    )
    return {"scale": scale, "source_rows": rows, "source_counts": counts, "stages": stages}


def make_instance(kind: str, workdir: Path, infra: Infra, name: str) -> dg.DagsterInstance:
    """The Dagster instance of a scale's runs.

    postgres (default): the deployment's own instance, deploy/dagster.local.yaml verbatim (pooled
    event log, batched event writes) on a fresh database of the bench's PostgreSQL server;
    postgres-stock: the same database layout through dagster-postgres' stock storage (a connection
    per event, no batching), to show what the pooled storage saves; memory / sqlite: `dagster dev`'s
    kinds of instance.
    """
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return dg.DagsterInstance.local_temp(str(home))
    if kind == "memory":
        return dg.DagsterInstance.ephemeral()
    url = infra.new_db(f"{name}_dagster").replace("postgresql://", "postgresql+psycopg2://", 1)
    if kind == "postgres":
        shutil.copy(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_PG_URL"] = url
    else:
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = "0"
        (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: '{url}'\n")
    return dg.DagsterInstance.from_config(str(home))


def run_scale(args, infra: Infra, meter: Meter, scale: float, start: datetime, end: datetime, workdir: Path):
    import pipeline
    from limit import measure_limit

    from totesys_assets.simulator import Simulator

    tag = scale_tag(scale)
    safe = tag.replace(".", "_")
    src = infra.new_db(f"bench_{safe}_src")
    wh = infra.new_db(f"bench_{safe}_wh")
    scratch = infra.new_db(f"bench_{safe}_limit")
    lake_url = infra.lake_url(f"{safe}")
    out: dict[str, Any] = {"scale": scale, "tag": tag}

    sim = Simulator(src, seed=args.seed, scale=scale)
    sim.create_schema()
    with meter.measure(f"{tag}-seed") as m:
        counts = sim.seed_history(start=start, end=end)
    rows = sum(counts.values())
    log(f"{tag} seed: {rows:,} source rows in {m.seconds:.1f}s")
    # A real source is a long-lived, vacuumed database: settle the fresh seed so autovacuum's
    # catch-up on 4.8M new rows does not run during (and vary) the limit and pipeline stages.
    with meter.measure(f"{tag}-settle") as settle:
        with psycopg.connect(src, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
            conn.execute("CHECKPOINT")
    log(f"{tag} settle: VACUUM (ANALYZE) + CHECKPOINT of the source in {settle.seconds:.1f}s")
    out["source_rows"] = rows
    out["source_counts"] = counts
    stages: list[dict[str, Any]] = [
        stage_row("seed", "simulator seed_history", rows, m.seconds, peak_rss_mb=m.peak_rss_mb)
    ]

    # the physical limit on the same databases
    with meter.measure(f"{tag}-limit") as m:
        lim = measure_limit(src, scratch, repeats=args.limit_repeats)
    for kind, how in (("extract", "ADBC -> Arrow"), ("load", "ADBC COPY -> unindexed")):
        stages.append(
            stage_row(
                "limit", f"{kind} ({how})", lim[kind]["rows"], lim[kind]["seconds"], key=kind,
                peak_rss_mb=m.peak_rss_mb, detail={k: v for k, v in lim[kind].items() if k != "rows"},
            )
        )  # fmt: skip
    stages.append(
        stage_row(
            "limit", "extract + load", rows, lim["extract"]["seconds"] + lim["load"]["seconds"], key="total"
        )
    )
    log(f"{tag} limit: extract {lim['extract']['seconds']:.2f}s, load {lim['load']['seconds']:.2f}s")

    # the full-history pipeline through Dagster
    os.environ["TOTESYS_DB_URL"] = src
    os.environ["WAREHOUSE_DB_URL"] = wh
    os.environ["TOTESYS_LAKE_URL"] = lake_url
    instance = make_instance(args.instance, workdir / safe, infra, f"bench_{safe}")
    runner = pipeline.DagsterRunner(
        instance, with_checks=not args.no_checks, log_level=args.dagster_log_level
    )
    first, last = start.date().isoformat(), end.date().isoformat()
    full_runs = []
    for group in ("raw", "dimensions", "facts"):
        partitioned = group != "dimensions"
        with meter.measure(f"{tag}-full-{group}", profile=args.profile) as m:
            run = runner.run(group, first if partitioned else None, last if partitioned else None)
        full_runs.append(run)
        log(
            f"{tag} full {group}: {run['wall_s']:.1f}s (ours {run['ours_s']:.1f}s, "
            f"Dagster {run['dagster_s']:.1f}s, {run['partition_materializations']} materialisations)"
        )
        if m.profile:
            print(profile_text(m.profile), file=sys.stderr)
        stages.append(
            stage_row(
                "full", group, rows, run["wall_s"], peak_rss_mb=m.peak_rss_mb, start_rss_mb=m.start_rss_mb,
                server_peak_rss_mb=m.server_peak_rss_mb, dagster_s=round(run["dagster_s"], 3),
                dagster_share=round(run["dagster_share"], 3), detail=run, profile=m.profile,
            )
        )  # fmt: skip
    full = [s for s in stages if s["group"] == "full"]
    stages.append(
        stage_row(
            "full", "end to end", rows, sum(s["seconds"] for s in full),
            peak_rss_mb=max(s["peak_rss_mb"] or 0 for s in full),
            dagster_s=round(sum(s["dagster_s"] for s in full), 3),
            dagster_share=round(sum(s["dagster_s"] for s in full) / sum(s["seconds"] for s in full), 3),
        )
    )  # fmt: skip
    out["warehouse_rows_after_full"] = pipeline.warehouse_counts(wh)
    out["partitions"] = [first, last]

    # the incremental run: one business hour later
    if not args.skip_incremental:
        before = sim.now()
        assert before is not None
        new = sim.advance(interval=timedelta(minutes=args.incremental_minutes))
        new_rows = sum(new.values())
        days = pipeline.changed_days(src, before)
        log(f"{tag} advanced {args.incremental_minutes} min: {new_rows} new row versions on {days}")
        inc = []
        # What the change sensor does: every tick it fingerprints the last days of every table in
        # the source and compares them with the lake's recorded fingerprints; every 10 minutes the
        # whole history (reported beside the hour, not in it: it runs whether or not anything changed).
        from dagster_aws.s3 import S3Resource

        from totesys_assets.automation.change_sensor import chain_request, recent_start
        from totesys_assets.raw.detector import detect_changes
        from totesys_assets.resources.lake import LakeResource
        from totesys_assets.resources.source import TotesysSource

        source, lake_res = TotesysSource(url=src), LakeResource(url=lake_url, s3=S3Resource())
        since = recent_start(today=sim.now().date())  # type: ignore[union-attr]
        with meter.measure(f"{tag}-incremental-detector") as m:
            recent = detect_changes(source, lake_res, since=since)
        inc.append(
            stage_row(
                "incremental", f"detector (the days from {since}, every tick)", rows, m.seconds,
                peak_rss_mb=m.peak_rss_mb, dagster_s=0.0, dagster_share=0.0,
                detail={"days": sorted({d for ds in recent.values() for d in ds})},
            )
        )  # fmt: skip
        with meter.measure(f"{tag}-detector-full") as m:
            found = detect_changes(source, lake_res)
        found_days = sorted({d for days_ in found.values() for d in days_})
        log(f"{tag} detector: last days {inc[-1]['seconds']:.2f}s, whole history {m.seconds:.2f}s; "
            f"days that differ: {found_days}")  # fmt: skip
        stages.append(
            stage_row(
                "detector", "whole history (every TOTESYS_FULL_CHECK_S)", rows, m.seconds,
                peak_rss_mb=m.peak_rss_mb, dagster_s=0.0, dagster_share=0.0, detail={"days": found_days},
            )
        )  # fmt: skip
        missed = set(days) - set(found_days)
        assert not missed, f"the detector missed changed days {sorted(missed)}"
        # The runs the sensor requests: one over the changed days (the raw tables, the dimensions
        # reading them, the facts), or one per contiguous range when they lie more than a week apart.
        # Also the days changed in place (the simulator changes some orders without touching
        # last_updated, as the real source does).
        requests = [chain_request(found)]
        if requests[0] is None:
            requests = [
                chain_request({t: {d: fp for d, fp in ds.items() if a <= d <= b} for t, ds in found.items()})
                for a, b in pipeline.contiguous_ranges(found_days)
            ]
        for request in requests:
            assert request is not None
            span = request.partition_key_range
            a, b = (span.start, span.end) if span else (request.partition_key, request.partition_key)
            with meter.measure(f"{tag}-incremental-chain-{a}", profile=args.profile) as m:
                run = runner.run_keys(list(request.asset_selection or []), a, b)
            log(f"{tag} incremental run {a}..{b}: {run['wall_s']:.2f}s (Dagster {run['dagster_s']:.2f}s)")
            if m.profile:
                print(profile_text(m.profile), file=sys.stderr)
            inc.append(
                stage_row(
                    "incremental", f"one run ({a}{'' if a == b else '..' + str(b)})", new_rows, run["wall_s"],
                    peak_rss_mb=m.peak_rss_mb, start_rss_mb=m.start_rss_mb,
                    dagster_s=round(run["dagster_s"], 3), dagster_share=round(run["dagster_share"], 3),
                    detail=run, profile=m.profile,
                )
            )  # fmt: skip
        total = sum(s["seconds"] for s in inc)
        dag = sum(s["dagster_s"] for s in inc)
        inc.append(
            stage_row(
                "incremental", "end to end", new_rows, total,
                peak_rss_mb=max(s["peak_rss_mb"] or 0 for s in inc), dagster_s=round(dag, 3),
                dagster_share=round(dag / total, 3) if total else None,
                detail={"run_new_versions": new, "days": days, "history_source_rows": rows},
            )
        )  # fmt: skip
        stages.extend(inc)
        out["warehouse_rows_after_incremental"] = pipeline.warehouse_counts(wh)
    if args.compare_lake_writes:
        out["lake_writes_comparison"] = compare_lake_writes(args, infra, runner, tag, first, last)
        os.environ["TOTESYS_LAKE_URL"] = lake_url
    out["stages"] = stages
    instance.dispose()
    return out


def compare_lake_writes(args, infra: Infra, runner, tag: str, first: str, last: str) -> dict[str, Any]:
    """The raw backfill into a fresh lake, `--compare-lake-writes` times with the lake's
    concurrency control (conditional writes) and as many without it, alternated, on the same
    source, instance and machine state: what the control costs a first backfill."""
    from totesys_assets.resources.lake import store as lake

    runs: dict[str, list[float]] = {"conditional": [], "unconditional": []}
    modes = ["unconditional", "conditional"]
    try:
        for i in range(args.compare_lake_writes):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                lake.CONDITIONAL_WRITES = mode == "conditional"
                os.environ["TOTESYS_LAKE_URL"] = infra.lake_url(f"{tag}_writes_{mode}_{i}".replace(".", "_"))
                run = runner.run("raw", first, last)
                runs[mode].append(round(run["wall_s"], 3))
                log(
                    f"{tag} raw backfill, {mode} lake writes ({i + 1}/{args.compare_lake_writes}): {run['wall_s']:.2f}s"
                )
    finally:
        lake.CONDITIONAL_WRITES = True
    best = {mode: min(times) for mode, times in runs.items()}
    mean = {mode: sum(times) / len(times) for mode, times in runs.items()}
    summary = {
        "runs_s": runs,
        "best_s": best,
        "mean_s": {m: round(v, 3) for m, v in mean.items()},
        "cost_best_s": round(best["conditional"] - best["unconditional"], 3),
        "cost_mean_s": round(mean["conditional"] - mean["unconditional"], 3),
        "lake": "s3 (moto)" if args.s3 else "local folder",
    }
    log(
        f"{tag} lake writes: conditional {runs['conditional']} s vs unconditional {runs['unconditional']} s; "
        f"cost {summary['cost_mean_s']:+.2f} s mean, {summary['cost_best_s']:+.2f} s best"
    )
    return summary


# --- ratios and the table -------------------------------------------------------------------------

LIMIT_REF = {
    "raw": "extract",
    "extract": "extract",
    "dimensions": "load",
    "facts": "load",
    "end to end": "total",
}
BASELINE_REF = {"raw": "extract", "dimensions": "dimensions", "facts": "facts", "end to end": "end to end"}


def add_ratios(scale_result: dict[str, Any], baseline: dict[str, Any] | None, extrapolate_note: str) -> None:
    stages = scale_result["stages"]
    limits = {s["key"]: s for s in stages if s["group"] == "limit"}
    limit_spr = {
        "extract": limits["extract"]["seconds"] / limits["extract"]["rows"],
        "load": limits["load"]["seconds"] / limits["load"]["rows"],
    }
    limit_spr["total"] = limit_spr["extract"] + limit_spr["load"]
    base_spr = {}
    if baseline is not None:
        base_spr = {s["stage"]: s["seconds"] / s["rows"] for s in baseline["stages"]}
    for s in stages:
        s["ratio_to_limit"] = None
        s["ratio_to_baseline"] = None
        if s["group"] in ("full", "baseline") and s["rows"]:
            spr = s["seconds"] / s["rows"]
            s["ratio_to_limit"] = round(spr / limit_spr[LIMIT_REF[s["stage"]]], 2)
            if base_spr and s["group"] == "full":
                s["ratio_to_baseline"] = round(base_spr[BASELINE_REF[s["stage"]]] / spr, 2)
    if baseline is not None:
        rows = scale_result["source_rows"]
        for b in baseline["stages"]:
            spr = b["seconds"] / b["rows"]
            measured = baseline["source_rows"] == rows
            row = stage_row(
                "baseline",
                b["stage"],
                rows,
                spr * rows,
                peak_rss_mb=b.get("peak_rss_mb") if measured else None,
                extrapolated=not measured,
                note="measured" if measured else extrapolate_note,
            )
            row["ratio_to_limit"] = round(spr / limit_spr[LIMIT_REF[b["stage"]]], 2)
            row["ratio_to_baseline"] = 1.0
            stages.append(row)
    order = {"seed": 0, "limit": 1, "full": 2, "baseline": 3, "incremental": 4, "detector": 5}
    stages.sort(key=lambda s: order[s["group"]])


def fmt_num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def render_table(results: list[dict[str, Any]]) -> str:
    header = [
        "scale",
        "stage",
        "rows",
        "seconds",
        "rows/s",
        "×limit",
        "×baseline",
        "peak RSS MB",
        "Dagster %",
    ]
    lines = []
    for res in results:
        for s in res["stages"]:
            name = f"{s['group']}: {s['stage']}"
            if s.get("extrapolated"):
                name += " *"
            lines.append(
                [
                    res["tag"],
                    name,
                    fmt_num(s["rows"]),
                    fmt_num(s["seconds"], 2),
                    fmt_num(s["rows_per_s"], 0),
                    fmt_num(s.get("ratio_to_limit"), 2),
                    fmt_num(s.get("ratio_to_baseline"), 2),
                    fmt_num(s.get("peak_rss_mb")),
                    "—" if s.get("dagster_share") is None else f"{s['dagster_share'] * 100:.0f}%",
                ]
            )
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(header)]
    out = [
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    out.append("  ".join("-" * w for w in widths))
    prev = None
    for r in lines:
        if prev is not None and r[0] != prev:
            out.append("")
        prev = r[0]
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def code_state() -> dict[str, Any]:
    """The commit and the uncommitted files of the repository, so results can be tied to code."""
    import subprocess

    def git(*cmd: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *cmd], cwd=BENCH_DIR.parent, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": status.splitlines() if status else [],
        "diff_sha1": _sha1(git("diff", "HEAD") or ""),
    }


def _sha1(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "dagster",
        "polars",
        "pyarrow",
        "psycopg",
        "adbc-driver-postgresql",
        "pgserver",
        "pandas",
        "pg8000",
    ):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, action="append", help="scale factor(s), repeatable (default 1)")
    p.add_argument(
        "--days",
        type=float,
        default=None,
        help="days of history ending at --end (default: from the real seed, 2022-11-03 14:20)",
    )
    p.add_argument("--end", default=DEFAULT_END.isoformat(), help="end of the history (default %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="simulator seed")
    p.add_argument("--incremental-minutes", type=float, default=60, help="how far to advance (default 60)")
    p.add_argument("--skip-incremental", action="store_true")
    p.add_argument(
        "--skip-baseline",
        action="store_true",
        help="skip the pandas/pg8000 baseline (automatic when they are not installed)",
    )
    p.add_argument("--baseline-scale", type=float, default=1.0, help="scale of the baseline run (default 1)")
    p.add_argument("--limit-repeats", type=int, default=2, help="best of N for the limit (default 2)")
    p.add_argument("--no-checks", action="store_true", help="leave the asset checks out of the runs")
    p.add_argument(
        "--instance",
        choices=["postgres", "postgres-stock", "memory", "sqlite"],
        default="postgres",
        help="Dagster instance: the deployment's (deploy/dagster.local.yaml, default), the same with "
        "dagster-postgres' stock event log, ephemeral in-memory, or sqlite on disk",
    )
    p.add_argument(
        "--dagster-log-level",
        default="WARNING",
        help="console log level of the runs (default WARNING: printing is not the pipeline)",
    )
    p.add_argument("--profile", action="store_true", help="cProfile each pipeline stage (slows it down)")
    p.add_argument("--s3", action="store_true", help="lake on a moto S3 server instead of a local folder")
    p.add_argument("--pg-dir", help="pgserver data directory to (re)use instead of a fresh temporary one")
    p.add_argument(
        "--pg-url", help="an existing PostgreSQL server (URL of a database to CREATE DATABASE from)"
    )
    p.add_argument("--keep", action="store_true", help="keep the databases (with --pg-dir/--pg-url)")
    p.add_argument("--workdir", help="where the lake and profiles go (default: a temporary folder)")
    p.add_argument("--out", help="JSON path (default bench/results/bench-<scales>-<timestamp>.json)")
    p.add_argument(
        "--compare-lake-writes",
        type=int,
        default=0,
        metavar="N",
        help="after the stages, run the raw backfill into a fresh lake N times with and N times "
        "without the lake's conditional writes, alternated (the concurrency control's cost)",
    )
    args = p.parse_args(argv)  # fmt: skip
    args.scale = args.scale or [1.0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the temporary PostgreSQL cluster is stopped and removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    end = datetime.fromisoformat(args.end)
    start = SIM_DEFAULT_START if args.days is None else end - timedelta(days=args.days)
    if start < FIRST_PARTITION:
        raise SystemExit(
            f"history would start {start}, before the first partition {FIRST_PARTITION:%Y-%m-%d}"
        )
    missing = missing_modules("pandas", "pg8000")
    baseline_skipped = None
    if args.skip_baseline:
        baseline_skipped = "--skip-baseline"
    elif missing:
        baseline_skipped = f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
        log(f"baseline skipped: {baseline_skipped}")

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="totesys-bench-"))
    os.environ["TOTESYS_HOME"] = str(workdir / "home")  # never the embedded defaults of the cwd
    profile_dir = (Path(args.out).parent if args.out else RESULTS_DIR) / "profiles" if args.profile else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / (f"bench-{'-'.join(scale_tag(s) for s in args.scale)}-{stamp}.json")
    )
    results: list[dict[str, Any]] = []
    state: dict[str, Any] = {"baseline": None, "code": code_state()}

    def notes() -> list[str]:
        baseline = state["baseline"]
        out = [
            "rows = source rows handled (full/baseline/limit); for incremental rows = new row versions",
            "×limit = (seconds per row of the stage) / (seconds per row of the bare ADBC limit: raw and "
            "baseline extract vs extract, dimensions/facts vs load, end to end vs extract + load)",
            "×baseline = (seconds per row of the seed-style baseline stage) / (ours): >1 means faster",
            "Dagster % = share of the runs' wall time outside our asset/check functions and IO manager",
        ]
        if baseline is not None and any(baseline["source_rows"] != r["source_rows"] for r in results):
            out.append(
                f"* baseline rows marked * are extrapolated from its measured {scale_tag(args.baseline_scale)} "
                f"run ({baseline['source_rows']:,} rows) at the same rows/s (row-by-row INSERT scales linearly)"
            )
        if baseline_skipped:
            out.append(f"baseline skipped: {baseline_skipped}")
        if args.profile:
            out.append("profiled run: cProfile inflates Python-heavy (Dagster) time more than native code")
        return out

    def write_report(complete: bool) -> None:
        report = {
            "complete": complete,
            "generated_at": datetime.now(UTC).isoformat(),
            "command": [sys.executable, *sys.argv],
            "args": dict(vars(args)),
            "history": {"start": start.isoformat(), "end": end.isoformat()},
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "memory_gb": _memory_gb(),
                "loadavg_at_write": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            },
            "versions": versions(),
            "code": state["code"],
            "dagster_instance": args.instance,
            "baseline": state["baseline"],
            "baseline_skipped": baseline_skipped,
            "peak_rss_mb": max_rss_mb(),
            "notes": notes(),
            "scales": results,
            "table": [
                {"scale": r["tag"], **{k: v for k, v in s.items() if k not in ("detail", "profile")}}
                for r in results
                for s in r["stages"]
            ],
        }
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(out_path)

    try:
        with infrastructure(args, workdir) as infra:
            sampler = RssSampler(server_pids=[infra.server_pid] if infra.server_pid else None)
            meter = Meter(sampler, profile_dir=profile_dir, log=log)
            if baseline_skipped is None:
                state["baseline"] = run_baseline(args, infra, meter, start, end)
            for scale in args.scale:
                res = run_scale(args, infra, meter, scale, start, end, workdir)
                add_ratios(
                    res, state["baseline"],
                    f"extrapolated from {scale_tag(args.baseline_scale)} at the measured rows/s",
                )  # fmt: skip
                results.append(res)
                write_report(complete=False)  # partial results survive an interrupted run
                print(render_table([res]), file=sys.stderr, flush=True)
            sampler.stop()
            log("stopping the databases")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(render_table(results))
    print()
    for n in notes():
        print(f"  {n}")
    peaks = max_rss_mb()
    print(f"  peak RSS of this process (getrusage): {peaks['self']:,.0f} MB")
    write_report(complete=True)
    log(f"results written to {out_path}")
    return 0


def missing_modules(*names: str) -> list[str]:
    """The modules among `names` that cannot be imported (the baseline's optional dependencies)."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        return round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None


if __name__ == "__main__":
    sys.exit(main())
