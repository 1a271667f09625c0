"""Measuring helpers for the benchmark: stage timer, peak-RSS sampler, cProfile summaries.

Nothing here knows about totesys; `run.py` and the stage modules use it.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import resource
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # optional (the `bench` extra); without it RSS comes from /proc and getrusage
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

MB = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_of_tree() -> int:
    """RSS of this process plus its children (bytes)."""
    if psutil is not None:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += child.memory_info().rss
        return total
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_of_pids(pids: list[int]) -> int:
    """RSS of the given processes and their children (the PostgreSQL server; psutil only)."""
    if psutil is None:
        return 0
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            total += proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
    return total


class RssSampler:
    """Samples RSS every `interval` seconds in a daemon thread; `peak()` since the last `reset()`.

    Tracks this process (+ children) and, when given, the PostgreSQL server's process tree
    (informational: shared buffers are counted once per backend).
    """

    def __init__(self, interval: float = 0.05, server_pids: list[int] | None = None) -> None:
        self.interval = interval
        self.server_pids = server_pids or []
        self._peak = 0
        self._server_peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        rss = _rss_of_tree()
        server = _rss_of_pids(self.server_pids) if self.server_pids else 0
        with self._lock:
            self._peak = max(self._peak, rss)
            self._server_peak = max(self._server_peak, server)

    def reset(self) -> None:
        with self._lock:
            self._peak = 0
            self._server_peak = 0
        self.sample()

    def peak_mb(self) -> float:
        self.sample()
        with self._lock:
            return round(self._peak / MB, 1)

    def server_peak_mb(self) -> float | None:
        if not self.server_pids or psutil is None:
            return None
        with self._lock:
            return round(self._server_peak / MB, 1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def max_rss_mb() -> dict[str, Any]:
    """getrusage's lifetime peak RSS of this process (MB).

    RUSAGE_CHILDREN is kept for completeness but says little: a forked helper (pg_ctl, git)
    inherits the parent's resident pages at fork time, so its peak mirrors ours.
    """
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux kilobytes
    return {
        "self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MB, 1),
        "children_forked": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale / MB, 1),
    }


def release_memory() -> None:
    """Hand memory earlier stages freed back to the OS (gc, Arrow's pool, glibc's heap).

    A deployment runs each Dagster run in a fresh process; the benchmark runs every stage in one.
    Without this, Arrow buffers the limit stage freed (4.8M rows at x100) stay resident in the
    allocators and count towards the next stage's peak.
    """
    import ctypes
    import gc

    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Measured:
    seconds: float = 0.0
    start_rss_mb: float | None = None
    peak_rss_mb: float | None = None
    server_peak_rss_mb: float | None = None
    profile: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Meter:
    """Times a block, records its peak RSS and optionally profiles it with cProfile."""

    def __init__(self, sampler: RssSampler, profile_dir: Path | None = None, log=print) -> None:
        self.sampler = sampler
        self.profile_dir = profile_dir
        self.log = log

    @contextlib.contextmanager
    def measure(self, name: str, *, profile: bool = False) -> Iterator[Measured]:
        out = Measured()
        release_memory()
        self.sampler.reset()
        out.start_rss_mb = self.sampler.peak_mb()
        profiler = cProfile.Profile() if profile and self.profile_dir is not None else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        try:
            yield out
        finally:
            if profiler is not None:
                profiler.disable()
            out.seconds = time.perf_counter() - started
            out.peak_rss_mb = self.sampler.peak_mb()
            out.server_peak_rss_mb = self.sampler.server_peak_mb()
            if profiler is not None:
                assert self.profile_dir is not None
                self.profile_dir.mkdir(parents=True, exist_ok=True)
                path = self.profile_dir / f"{name}.prof"
                profiler.dump_stats(str(path))
                out.profile = summarize_profile(profiler, path)


# --- cProfile summaries ---------------------------------------------------------------------------

# Self time is attributed to a bucket by the file of the function (or, for C functions, by the file
# of their callers, pro rata), so "time in psycopg's C execute called from our warehouse code" lands
# in the database bucket, and event-log writes through SQLAlchemy land in Dagster's.
_BUCKETS = [
    ("totesys_assets", "ours: totesys_assets"),
    ("/polars/", "polars"),
    ("/pyarrow/", "pyarrow"),
    ("/adbc_driver", "database client (adbc/psycopg)"),
    ("/psycopg", "database client (adbc/psycopg)"),
    ("/pg8000/", "database client (pg8000)"),
    ("/pandas/", "pandas"),
    ("/numpy/", "numpy"),
    ("/botocore/", "boto3/botocore (S3)"),
    ("/boto3/", "boto3/botocore (S3)"),
    ("/s3transfer/", "boto3/botocore (S3)"),
    ("/urllib3/", "boto3/botocore (S3)"),
    ("/moto/", "moto (S3 server, same process)"),
    ("/werkzeug/", "moto (S3 server, same process)"),
    ("/dagster_aws/", "dagster"),
    ("/dagster/_core/storage", "dagster: event/run storage"),
    ("/sqlalchemy/", "dagster: event/run storage"),
    ("/alembic/", "dagster: event/run storage"),
    ("/dagster/", "dagster"),
    ("/dagster_shared/", "dagster"),
    ("/pydantic", "dagster"),
    ("/dagster_pipes/", "dagster"),
    ("/simulator/", "simulator"),
    ("bench/", "bench harness"),
]


def _bucket_of_file(filename: str) -> str:
    for needle, bucket in _BUCKETS:
        if needle in filename:
            return bucket
    if filename.startswith("~") or filename.startswith("<"):
        return "python builtins"
    return "python stdlib/other"


def _builtin_bucket(name: str) -> str | None:
    lowered = name.lower()
    if "sqlite3" in lowered:
        return "dagster: event/run storage"
    if "psycopg" in lowered or "adbc" in lowered or "pgconn" in lowered:
        return "database client (adbc/psycopg)"
    if "polars" in lowered or "pydataframe" in lowered or "pylazyframe" in lowered or "pyseries" in lowered:
        return "polars"
    return None


def summarize_profile(profiler: cProfile.Profile, path: Path, top: int = 25) -> dict[str, Any]:
    """Self time by bucket, plus the top functions by cumulative and by self time."""
    stats = pstats.Stats(profiler)
    raw: dict = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1e-9
    buckets: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tt, _ct, callers) in raw.items():
        if filename == "~":
            bucket = _builtin_bucket(name)
            if bucket is not None:
                buckets[bucket] = buckets.get(bucket, 0.0) + tt
                continue
            caller_tt = {c: v[2] for c, v in callers.items()}
            share_total = sum(caller_tt.values())
            if share_total <= 0:
                buckets["python builtins"] = buckets.get("python builtins", 0.0) + tt
                continue
            for (cfile, _cl, _cn), ctt in caller_tt.items():
                b = _bucket_of_file(cfile)
                buckets[b] = buckets.get(b, 0.0) + tt * ctt / share_total
        else:
            b = _bucket_of_file(filename)
            buckets[b] = buckets.get(b, 0.0) + tt

    def fmt(func: tuple) -> str:
        filename, line, name = func
        if filename == "~":
            return name
        parts = Path(filename).parts
        short = "/".join(parts[-3:]) if len(parts) >= 3 else filename
        return f"{short}:{line}({name})"

    by_cum = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)
    by_self = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)
    ours = [kv for kv in by_cum if "totesys_assets" in kv[0][0]]
    return {
        "file": str(path),
        "profiled_seconds": round(total, 3),
        "self_time_by_bucket": {
            k: {"seconds": round(v, 3), "share": round(v / total, 3)}
            for k, v in sorted(buckets.items(), key=lambda kv: kv[1], reverse=True)
        },
        "top_cumulative": [
            {"function": fmt(f), "calls": v[1], "cumulative_s": round(v[3], 3)} for f, v in by_cum[:top]
        ],
        "top_self": [{"function": fmt(f), "calls": v[1], "self_s": round(v[2], 3)} for f, v in by_self[:top]],
        "top_ours_cumulative": [
            {"function": fmt(f), "calls": v[1], "cumulative_s": round(v[3], 3)} for f, v in ours[:top]
        ],
    }


def profile_text(summary: dict[str, Any], lines: int = 12) -> str:
    """A short human-readable digest of `summarize_profile`'s output."""
    out = io.StringIO()
    out.write(f"    profiled {summary['profiled_seconds']:.1f}s ({summary['file']})\n")
    out.write("    self time by bucket:\n")
    for name, v in list(summary["self_time_by_bucket"].items())[:lines]:
        out.write(f"      {v['share'] * 100:5.1f}%  {v['seconds']:8.2f}s  {name}\n")
    out.write("    our functions by cumulative time:\n")
    for row in summary["top_ours_cumulative"][:lines]:
        out.write(f"      {row['cumulative_s']:8.2f}s  {row['calls']:>7}  {row['function']}\n")
    return out.getvalue()
