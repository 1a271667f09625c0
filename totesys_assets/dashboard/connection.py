"""The dashboard's connection to the warehouse: where it is, a read-only bounded session, the
password masked in every text, and the states of the warehouse the pages explain."""

from __future__ import annotations

import re
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from totesys_assets.settings import ENV_WAREHOUSE_URL, env_float, env_or_none, redact_url

ENV_REFRESH_S = "TOTESYS_DASHBOARD_REFRESH_S"
DEFAULT_REFRESH_S = 10.0
STATEMENT_TIMEOUT = "60s"
APPLICATION_NAME = "totesys_dashboard"


def refresh_seconds() -> float:
    """How often a page refreshes itself (TOTESYS_DASHBOARD_REFRESH_S, default 10 s)."""
    return env_float(ENV_REFRESH_S, DEFAULT_REFRESH_S, "seconds", allow_zero=False)


def warehouse_url() -> str:
    """WAREHOUSE_DB_URL, else the embedded warehouse (started on first use), as the code location."""
    url = env_or_none(ENV_WAREHOUSE_URL)
    if url:
        return url
    from totesys_assets import embedded

    return embedded.warehouse_url()


def read_only_conninfo(url: str) -> str:
    """libpq connection string for the dashboard's own session: read-only, bounded, named.

    The URL's own parameters (sslmode, a search_path in `options`, …) are kept.
    """
    params: dict[str, Any] = conninfo_to_dict(url)
    options = str(params.get("options") or "")
    params["options"] = (
        f"{options} -c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT}".strip()
    )
    params.setdefault("application_name", APPLICATION_NAME)
    params.setdefault("connect_timeout", "5")
    return make_conninfo(**params)


def safe_text(text: str, url: str) -> str:
    """`text` with the password of `url` (user info or `password=` parameter) masked."""
    try:
        secret = conninfo_to_dict(url).get("password")
    except Exception:  # noqa: BLE001 - an unparseable URL has nothing we can mask by value
        secret = None
    if secret:
        text = text.replace(str(secret), "***")
    return re.sub(r"(?i)(password=)[^&\s]+", r"\1***", text)


def display_url(url: str) -> str:
    """The warehouse URL as the dashboard shows it (password masked)."""
    return safe_text(redact_url(url), url)


class DashboardError(RuntimeError):
    """A state of the warehouse the dashboard explains instead of showing a traceback."""

    what_to_do = ""


class WarehouseUnreachable(DashboardError):
    what_to_do = (
        "Check that the warehouse database is running and that `WAREHOUSE_DB_URL` points at it "
        "(unset, the dashboard uses the embedded warehouse under `$TOTESYS_HOME`, as `dagster dev` does)."
    )


class WarehouseNotLoaded(DashboardError):
    what_to_do = (
        "Start the pipeline: `totesys-dev` (or `dagster dev`). Its automation backfills the whole history "
        "and then keeps the warehouse current by itself (on the embedded demo, a couple of minutes to "
        "the first charts); or materialize the `raw`, `dimensions` and `facts` groups by hand. "
        "This page fills in by itself once the facts arrive."
    )


def connection_lost(exc: BaseException, state: str) -> bool:
    """Class 08 (connection exception), 57P0x (server shutting down), or libpq's own I/O errors."""
    if state.startswith("08") or state.startswith("57P0"):
        return True
    text = str(exc).lower()
    return not state and any(
        s in text for s in ("server closed the connection", "connection", "no connection", "terminat")
    )


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a driver error, from its attribute or its message."""
    state = getattr(exc, "sqlstate", None)
    if state:
        return str(state)
    match = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(exc))
    return match.group(1) if match else None
