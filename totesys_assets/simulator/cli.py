"""`totesys-sim`: create, seed, advance, load and inspect a totesys source from the shell.

The database is `--url`, else $TOTESYS_DB_URL, else the embedded demo source. URLs are printed
with the password redacted.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from totesys_assets.settings import ENV_SOURCE_URL, env_or_none, redact_url
from totesys_assets.simulator import clock
from totesys_assets.simulator.simulator import Simulator, SimulatorError


def _resolve_url(url: str | None) -> str:
    if url:
        return url
    if env := env_or_none(ENV_SOURCE_URL):
        return env
    try:
        from totesys_assets.embedded import source_url
    except ImportError as exc:
        raise SystemExit(f"no database: pass --url or set {ENV_SOURCE_URL} ({exc})") from exc
    return source_url()


def _stored_simulator(url: str) -> Simulator:
    """A simulator with the seed and scale the source was generated with (defaults otherwise)."""
    with psycopg.connect(url) as conn:
        row = clock.read_clock(conn)
    return Simulator(url, seed=row.seed, scale=row.scale) if row else Simulator(url)


def _print_counts(title: str, counts: dict[str, int], seconds: float) -> None:
    print(f"{title} ({sum(counts.values()):,} rows in {seconds:.2f} s)")
    for table, n in counts.items():
        print(f"  {table:<16}{n:>12,}")


def cmd_init(args: argparse.Namespace, url: str) -> None:
    sim = Simulator(url, seed=args.seed, scale=args.scale)
    start = datetime.fromisoformat(args.start) if args.start else None
    began = time.perf_counter()
    counts = sim.seed_history(start=start, days=args.days, replace=args.replace)
    _print_counts(f"seeded {redact_url(url)} up to {sim.now()}", counts, time.perf_counter() - began)


def cmd_advance(args: argparse.Namespace, url: str) -> None:
    sim = _stored_simulator(url)
    began = time.perf_counter()
    if args.to:
        counts = sim.advance(to=datetime.fromisoformat(args.to))
    elif args.minutes is not None:
        counts = sim.advance(timedelta(minutes=args.minutes))
    else:
        counts = sim.advance()
    _print_counts(f"advanced {redact_url(url)} to {sim.now()}", counts, time.perf_counter() - began)


def cmd_load_reference(args: argparse.Namespace, url: str) -> None:
    began = time.perf_counter()
    counts = Simulator(url).load_reference(args.path, replace=args.replace)
    _print_counts(f"loaded {args.path} into {redact_url(url)}", counts, time.perf_counter() - began)


def cmd_stats(args: argparse.Namespace, url: str) -> None:
    sim = Simulator(url)
    print(f"{redact_url(url)}  simulated now: {sim.now()}")
    print(f"  {'table':<16}{'rows':>12}  max(last_updated)")
    for table, (rows, newest) in sim.stats().items():
        print(f"  {table:<16}{rows:>12,}  {newest}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="totesys-sim", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help=f"source PostgreSQL URL (default: ${ENV_SOURCE_URL}, else embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create the schema and seed a history up to now")
    init.add_argument("--scale", type=float, default=1.0, help="order volume multiplier (1 = real rate)")
    init.add_argument("--seed", type=int, default=42)
    init.add_argument("--days", type=int, help="history length in days (default: since 2022-11-03)")
    init.add_argument("--start", help="history start, YYYY-MM-DD[THH:MM:SS] (UTC)")
    init.add_argument("--replace", action="store_true", help="overwrite a source that has rows")
    init.set_defaults(func=cmd_init)

    adv = sub.add_parser("advance", help="move simulated time forward (default: catch up to now)")
    group = adv.add_mutually_exclusive_group()
    group.add_argument("--minutes", type=float, help="advance by this many minutes")
    group.add_argument("--to", help="advance to this ISO timestamp (UTC)")
    adv.set_defaults(func=cmd_advance)

    ref = sub.add_parser("load-reference", help="load a real export folder (Parquet or JSON)")
    ref.add_argument("path", type=Path)
    ref.add_argument("--replace", action="store_true", help="overwrite a source that has rows")
    ref.set_defaults(func=cmd_load_reference)

    stats = sub.add_parser("stats", help="row counts and max(last_updated) per table")
    stats.set_defaults(func=cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "start", None) and args.days is not None:
        raise SystemExit("totesys-sim init: use --start or --days, not both")
    url = _resolve_url(args.url)
    try:
        args.func(args, url)
    except (SimulatorError, ValueError, psycopg.Error) as exc:
        raise SystemExit(f"totesys-sim {args.command}: {exc}") from exc


if __name__ == "__main__":
    main()
