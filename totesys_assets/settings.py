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
