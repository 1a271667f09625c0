"""The configuration contract (DESIGN.md): environment variables and their embedded defaults."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ENV_SOURCE_URL = "TOTESYS_DB_URL"
ENV_WAREHOUSE_URL = "WAREHOUSE_DB_URL"
ENV_LAKE_URL = "TOTESYS_LAKE_URL"
ENV_HOME = "TOTESYS_HOME"
ENV_START_DATE = "TOTESYS_START_DATE"

DEFAULT_START_DATE = "2022-11-03"


def totesys_home() -> Path:
    """Where the embedded PostgreSQL and the local lake live (`.totesys/` in the working directory)."""
    return Path(os.environ.get(ENV_HOME) or ".totesys").resolve()


def env_or_none(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def partitions_start_date() -> str:
    return env_or_none(ENV_START_DATE) or DEFAULT_START_DATE


def redact_url(url: str) -> str:
    """A database URL with any password replaced, safe for logs, errors and metadata."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit(parts._replace(query=query))


def lake_location() -> str:
    """Where the lake lives, for display: `s3://bucket/prefix` or the local folder (no secrets)."""
    url = env_or_none(ENV_LAKE_URL)
    if url is None:
        return str(totesys_home() / "lake")
    return url.rstrip("/") if url.startswith("s3://") else str(Path(url).resolve())


def lake_kind() -> str:
    """The storage kind badge of the raw assets: `s3` for a bucket, `parquet` for a local folder."""
    return "s3" if lake_location().startswith("s3://") else "parquet"


ENV_DEMO_RATE = "TOTESYS_DEMO_RATE"
DEFAULT_DEMO_RATE = 2.0


def demo_rate() -> float:
    """New demo orders per minute on the embedded default (0 turns the demo activity off)."""
    raw = env_or_none(ENV_DEMO_RATE)
    try:
        rate = float(raw) if raw is not None else DEFAULT_DEMO_RATE
    except ValueError:
        raise ValueError(f"{ENV_DEMO_RATE} must be a number of orders per minute, got {raw!r}") from None
    if rate < 0:
        raise ValueError(f"{ENV_DEMO_RATE} must be >= 0, got {raw!r}")
    return rate


ENV_DASHBOARD_URL = "TOTESYS_DASHBOARD_URL"
LOCAL_DASHBOARD_URL = "http://127.0.0.1:8501"


def dashboard_url() -> str | None:
    """Where the dashboard runs: TOTESYS_DASHBOARD_URL, else its local address on the embedded demo."""
    url = env_or_none(ENV_DASHBOARD_URL)
    if url is None and env_or_none(ENV_WAREHOUSE_URL) is None:
        return LOCAL_DASHBOARD_URL
    return url
