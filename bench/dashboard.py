"""Dashboard page times against one warehouse: p50/p95 of each page's queries over N repetitions.

A page run costs (1) a refresh of the live current state when the shared snapshot has expired
(every page run of a dashboard left open: pages refresh every 10 s, snapshots live 5 s): the
facts' version counts, the versions appended since the last refresh, the dimensions, in one
read-only snapshot; and (2) the page's numbers, computed in Polars from that state (exactly the
calls the page makes). Both are timed per repetition, with and without filters. `--render` also
times the real pages end to end in Streamlit's AppTest (script, charts and tables serialised as the
server sends them; no browser). The first read of the current state (the `*_current` views, once
per dashboard process) is timed separately as the cold start.

    python bench/dashboard.py --url "$WAREHOUSE_DB_URL" -n 20 --render
    # a warehouse that bench/run.py built and kept (--pg-dir DIR --keep):
    python bench/dashboard.py --pg-dir /tmp/bpg100 --scale 100 -n 20 --render

It prints one table and writes JSON to bench/results/dashboard-<tag>-<time>.json (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from totesys_assets.dashboard import queries as q  # noqa: E402

PageFn = Callable[[q.LiveWarehouse, q.Snapshot, q.Filters], object]


def _history(live: q.LiveWarehouse, snap: q.Snapshot, f: q.Filters) -> object:
    recent = live.recent_changes(q.SALES)
    order = recent.get_column("id")[0] if recent.height else int(snap.facts[q.SALES]["sales_order_id"].max())
    return live.history(q.SALES, int(order))


# The calls each page makes (totesys_assets/dashboard/{sales,purchases,payments,history}.py), in order.
PAGES: dict[str, PageFn] = {
    "sales": lambda live, snap, f: [
        q.by_currency(snap, q.SALES, f),
        q.by_month(snap, q.SALES, f),
        q.top_designs(snap, f),
        q.top_counterparties(snap, q.SALES, f),
        q.by_location(snap, q.SALES, f),
        q.by_staff(snap, q.SALES, f),
    ],
    "purchases": lambda live, snap, f: [
        q.by_currency(snap, q.PURCHASES, f),
        q.by_month(snap, q.PURCHASES, f),
        q.top_counterparties(snap, q.PURCHASES, f, top=None),
        q.by_staff(snap, q.PURCHASES, f),
    ],
    "payments": lambda live, snap, f: [
        q.by_currency(snap, q.PAYMENTS, f),
        q.overdue_count(snap, f, q.utc_now().date()),
        q.payments_by_month(snap, f),
        q.overdue_table(snap, f, q.utc_now().date(), sort=q.DEFAULT_OVERDUE_SORT),
    ],
    "history": _history,
}
VIEWS = {
    "sales": None,
    "purchases": "views/purchases.py",
    "payments": "views/payments.py",
    "history": "views/history.py",
}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * pct / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "mean": statistics.fmean(values),
        "max": max(values),
    }


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def filtered_variant(snap: q.Snapshot) -> q.Filters:
    """The last year of data in one currency: what a manager narrows to."""
    _, last = q.date_bounds(snap)
    codes = snap.dims["currency"].sort("currency_code").get_column("currency_code").to_list()
    start = (last - timedelta(days=365)) if last else None
    return q.Filters(start=start, end=last, currencies=tuple(codes[:1]))


def _timed(live: q.LiveWarehouse, fn: PageFn, filters: q.Filters, changed: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    live.expire(changed=changed)
    snap = live.snapshot()
    t1 = time.perf_counter()
    fn(live, snap, filters)
    return t1 - t0, time.perf_counter() - t1


def time_queries(live: q.LiveWarehouse, repeats: int) -> dict[str, Any]:
    """Per page and filter set: a page run after a change (every fact counted, numbers computed
    afresh) and on an unchanged warehouse (cheap refresh, numbers from the snapshot's memo)."""
    out: dict[str, Any] = {}
    variants = {"all": q.Filters(), "filtered": filtered_variant(live.snapshot())}
    for page, fn in PAGES.items():
        for name, filters in variants.items():
            row: dict[str, Any] = {"page": page, "filters": name}
            for state, changed in (("changed", True), ("unchanged", False)):
                refresh, compute = [], []
                for _ in range(repeats):
                    r, c = _timed(live, fn, filters, changed)
                    refresh.append(r)
                    compute.append(c)
                row[state] = {
                    "total": summary([a + b for a, b in zip(refresh, compute, strict=True)]),
                    "refresh": summary(refresh),
                    "compute": summary(compute),
                }
            out[f"{page}/{name}"] = row
    out["_filtered_variant"] = {k: str(v) for k, v in vars(variants["filtered"]).items()}
    return out


def time_render(url: str, repeats: int) -> dict[str, Any]:
    """The real pages in AppTest (no browser): after a change, and on an unchanged warehouse."""
    from streamlit.testing.v1 import AppTest

    os.environ["WAREHOUSE_DB_URL"] = url
    app = REPO_ROOT / "totesys_assets" / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=600)
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the app raised: {[e.value for e in at.exception]}")
    live = q.shared_warehouse(url)
    out: dict[str, Any] = {"first_run_s": first}
    for page, path in VIEWS.items():
        if path:
            at.switch_page(path)
        row: dict[str, Any] = {}
        for state, changed in (("changed", True), ("unchanged", False)):
            times = []
            for _ in range(repeats):
                live.expire(changed=changed)
                t0 = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t0)
                if at.exception:
                    raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")
            row[state] = summary(times)
        out[page] = row
    return out


def find_bench_warehouse(pg_dir: str, scale: float) -> str:
    """The newest `bench_x<scale>_wh_<pid>` database of a cluster bench/run.py kept (--pg-dir --keep)."""
    from urllib.parse import urlsplit, urlunsplit

    import pgserver
    import psycopg

    base = pgserver.get_server(Path(pg_dir), cleanup_mode=None).get_uri()
    prefix = f"bench_x{scale:g}_wh_".replace(".", "_")
    with psycopg.connect(base) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY oid DESC", (prefix,)
        ).fetchall()
    if not rows:
        raise SystemExit(
            f"no {prefix}* database in {pg_dir}: run bench/run.py --scale {scale:g} --pg-dir {pg_dir} --keep"
        )
    return urlunsplit(urlsplit(base)._replace(path=f"/{rows[0][0]}"))


def render_table(result: dict[str, Any]) -> str:
    lines = [
        f"warehouse: {result['warehouse']}  fact rows: {result['fact_rows']}",
        f"cold start (first read of the current state, once per process): {result['cold_start_s']:.2f} s, "
        f"RSS {result['rss_mb']:.0f} MiB",
        "",
        "page queries (refresh + the page's numbers), seconds",
        f"{'page':<10} {'filters':<9} | {'changed p50':>11} {'p95':>6} {'(refresh':>9} {'compute)':>9} "
        f"| {'unchanged p50':>13} {'p95':>6}",
    ]
    for key, row in result["queries"].items():
        if key.startswith("_"):
            continue
        ch, un = row["changed"], row["unchanged"]
        lines.append(
            f"{row['page']:<10} {row['filters']:<9} | {ch['total']['p50']:>11.3f} {ch['total']['p95']:>6.3f} "
            f"{ch['refresh']['p50']:>9.3f} {ch['compute']['p50']:>9.3f} | {un['total']['p50']:>13.3f} "
            f"{un['total']['p95']:>6.3f}"
        )
    if result.get("render"):
        render = result["render"]
        lines += [
            "",
            f"AppTest page runs (script, charts and tables serialised; no browser), seconds; "
            f"first run {render['first_run_s']:.2f} s",
            f"{'page':<10} | {'changed p50':>11} {'p95':>6} | {'unchanged p50':>13} {'p95':>6}",
        ]
        for page in VIEWS:
            ch, un = render[page]["changed"], render[page]["unchanged"]
            lines.append(
                f"{page:<10} | {ch['p50']:>11.3f} {ch['p95']:>6.3f} | {un['p50']:>13.3f} {un['p95']:>6.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--url", default=os.environ.get("WAREHOUSE_DB_URL"), help="warehouse URL (default $WAREHOUSE_DB_URL)"
    )
    p.add_argument("--pg-dir", help="a pgserver cluster bench/run.py kept (--pg-dir … --keep)")
    p.add_argument("--scale", type=float, default=1.0, help="with --pg-dir: whose warehouse (default 1)")
    p.add_argument("-n", "--repeats", type=int, default=20, help="repetitions per page (default 20)")
    p.add_argument("--render", action="store_true", help="also time the pages end to end in AppTest")
    p.add_argument("--tag", help="a name for the result (default x<scale>)")
    p.add_argument("--out", help="JSON path (default bench/results/dashboard-<tag>-<time>.json)")
    args = p.parse_args(argv)
    url = find_bench_warehouse(args.pg_dir, args.scale) if args.pg_dir else args.url
    if not url:
        p.error("give --url, --pg-dir, or set WAREHOUSE_DB_URL")

    live = q.shared_warehouse(url)
    t0 = time.perf_counter()
    snap = live.snapshot()
    cold = time.perf_counter() - t0
    result: dict[str, Any] = {
        "warehouse": live.display_url,
        "fact_rows": snap.versions,
        "current_rows": {k: v.height for k, v in snap.facts.items()},
        "cold_start_s": cold,
        "rss_mb": rss_mb(),
        "repeats": args.repeats,
        "queries": time_queries(live, args.repeats),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if args.render:
        result["render"] = time_render(url, args.repeats)
    live.close()
    print(render_table(result))
    tag = args.tag or f"x{args.scale:g}"
    out = (
        Path(args.out)
        if args.out
        else REPO_ROOT / "bench" / "results" / f"dashboard-{tag}-{datetime.now():%Y%m%d-%H%M%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
