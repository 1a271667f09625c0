"""The configuration contract (DESIGN.md): every environment variable the code location reads, its
default, and the one redaction of secrets that logs, errors, metadata and alerts go through."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

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


ENV_CHUNK_ROWS = "TOTESYS_CHUNK_ROWS"
# Rows of a table a long run holds at a time (docs/decisions.md, "Bounded memory"): about a month
# at x1000, the whole history below x100.
DEFAULT_CHUNK_ROWS = 500_000


def chunk_rows() -> int:
    """Source rows a long run extracts, transforms and loads at a time (TOTESYS_CHUNK_ROWS)."""
    raw = env_or_none(ENV_CHUNK_ROWS)
    if raw is None:
        return DEFAULT_CHUNK_ROWS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{ENV_CHUNK_ROWS} must be a whole number of rows of at least 1, got {raw!r}")
    return int(raw)


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


def env_float(name: str, default: float, unit: str, *, allow_zero: bool) -> float:
    """A non-negative (or, without `allow_zero`, positive) number from the environment, else `default`."""
    raw = env_or_none(name)
    try:
        value = float(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a number of {unit}, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {raw!r}")
    return value


def demo_rate() -> float:
    """New demo orders per minute on the embedded default (0 turns the demo activity off)."""
    return env_float(ENV_DEMO_RATE, DEFAULT_DEMO_RATE, "orders per minute", allow_zero=True)


ENV_DASHBOARD_URL = "TOTESYS_DASHBOARD_URL"
LOCAL_DASHBOARD_URL = "http://127.0.0.1:8501"


def dashboard_url() -> str | None:
    """Where the dashboard runs: TOTESYS_DASHBOARD_URL, else its local address on the embedded demo."""
    url = env_or_none(ENV_DASHBOARD_URL)
    if url is None and env_or_none(ENV_WAREHOUSE_URL) is None:
        return LOCAL_DASHBOARD_URL
    return url


# --- Automation timing: read when the schedule and sensor definitions are built ----------------

ENV_REFRESH_CRON = "TOTESYS_REFRESH_CRON"
ENV_HEARTBEAT_CRON = "TOTESYS_HEARTBEAT_CRON"
ENV_DEMO_CRON = "TOTESYS_DEMO_CRON"
ENV_SENSOR_INTERVAL_S = "TOTESYS_SENSOR_INTERVAL_S"
ENV_AUTOMATION_INTERVAL_S = "TOTESYS_AUTOMATION_INTERVAL_S"
ENV_FULL_CHECK_S = "TOTESYS_FULL_CHECK_S"

DEFAULT_REFRESH_CRON = "*/10 * * * *"
DEFAULT_HEARTBEAT_CRON = "*/20 * * * *"
DEFAULT_DEMO_CRON = "* * * * *"
# Dagster's sensor daemon looks at its sensors every 5 s; a 4 s interval makes every look a tick
# (5 s would skip every other one: the previous tick began a moment after the previous look).
DEFAULT_SENSOR_INTERVAL_S = 4
DEFAULT_AUTOMATION_INTERVAL_S = 15
DEFAULT_FULL_CHECK_S = 600


def refresh_cron() -> str:
    """The raw refresh schedule's cron (UTC)."""
    return env_or_none(ENV_REFRESH_CRON) or DEFAULT_REFRESH_CRON


def heartbeat_cron() -> str:
    """The cron (UTC) on which the dimensions and today's facts reload even without a raw change."""
    return env_or_none(ENV_HEARTBEAT_CRON) or DEFAULT_HEARTBEAT_CRON


def demo_cron() -> str:
    """The cron (UTC) of the embedded demo's activity."""
    return env_or_none(ENV_DEMO_CRON) or DEFAULT_DEMO_CRON


def sensor_interval_s() -> int:
    """Seconds between ticks of the source change sensor."""
    return _seconds(ENV_SENSOR_INTERVAL_S, DEFAULT_SENSOR_INTERVAL_S)


def automation_interval_s() -> int:
    """Seconds between evaluations of the declarative-automation sensor."""
    return _seconds(ENV_AUTOMATION_INTERVAL_S, DEFAULT_AUTOMATION_INTERVAL_S)


def full_check_s() -> int:
    """Seconds between the change sensor's checks of the whole history (other ticks check the
    last days only)."""
    return _seconds(ENV_FULL_CHECK_S, DEFAULT_FULL_CHECK_S)


def _seconds(name: str, default: int) -> int:
    raw = env_or_none(name)
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number of seconds, got {raw!r}") from None


# --- Alerts ------------------------------------------------------------------------------------

ENV_WEBSERVER_URL = "DAGSTER_WEBSERVER_URL"
ENV_ALERT_SNS_TOPIC_ARN = "TOTESYS_ALERT_SNS_TOPIC_ARN"
ENV_ALERT_WEBHOOK_URL = "TOTESYS_ALERT_WEBHOOK_URL"
ENV_SMTP_HOST = "TOTESYS_ALERT_SMTP_HOST"
ENV_SMTP_PORT = "TOTESYS_ALERT_SMTP_PORT"
ENV_SMTP_FROM = "TOTESYS_ALERT_SMTP_FROM"
ENV_SMTP_TO = "TOTESYS_ALERT_SMTP_TO"
ENV_SMTP_USER = "TOTESYS_ALERT_SMTP_USER"
ENV_SMTP_PASSWORD = "TOTESYS_ALERT_SMTP_PASSWORD"
ENV_SMTP_STARTTLS = "TOTESYS_ALERT_SMTP_STARTTLS"


@dataclass(frozen=True)
class SmtpSettings:
    """Email alerts. STARTTLS defaults on when a user is set, so a password never travels in clear
    unless TOTESYS_ALERT_SMTP_STARTTLS=false says so."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False

    @classmethod
    def from_env(cls) -> SmtpSettings | None:
        """None without TOTESYS_ALERT_SMTP_HOST; a ValueError naming the variable that is invalid."""
        host = env_or_none(ENV_SMTP_HOST)
        if host is None:
            return None
        user = env_or_none(ENV_SMTP_USER)
        starttls_text = (env_or_none(ENV_SMTP_STARTTLS) or ("true" if user else "false")).lower()
        if starttls_text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"{ENV_SMTP_STARTTLS} must be true or false, got {starttls_text!r}")
        starttls = starttls_text in ("1", "true", "yes", "on")
        port = env_or_none(ENV_SMTP_PORT) or ("587" if starttls else "25")
        if not port.isdigit():
            raise ValueError(f"{ENV_SMTP_PORT} must be a port number, got {port!r}")
        recipients = tuple(r.strip() for r in (env_or_none(ENV_SMTP_TO) or "").split(",") if r.strip())
        if not recipients:
            raise ValueError(f"{ENV_SMTP_HOST} is set but {ENV_SMTP_TO} lists no recipients")
        sender = env_or_none(ENV_SMTP_FROM) or f"dagster-alerts@{socket.getfqdn() or 'localhost'}"
        return cls(host, int(port), sender, recipients, user, env_or_none(ENV_SMTP_PASSWORD), starttls)


@dataclass(frozen=True)
class AlertSettings:
    """Where run-failure alerts go (an unset channel is not used) and the run link's base URL."""

    webserver_url: str | None = None
    sns_topic_arn: str | None = None
    # A Slack or Teams webhook URL is a credential: kept out of the repr, scrubbed from alerts.
    webhook_url: str | None = field(default=None, repr=False)
    smtp: SmtpSettings | None = None
    # Invalid email settings, reported when an alert is sent so the other channels still deliver.
    smtp_error: str | None = None

    @classmethod
    def from_env(cls) -> AlertSettings:
        try:
            smtp, smtp_error = SmtpSettings.from_env(), None
        except ValueError as exc:
            smtp, smtp_error = None, str(exc)
        return cls(
            webserver_url=env_or_none(ENV_WEBSERVER_URL),
            sns_topic_arn=env_or_none(ENV_ALERT_SNS_TOPIC_ARN),
            webhook_url=env_or_none(ENV_ALERT_WEBHOOK_URL),
            smtp=smtp,
            smtp_error=smtp_error,
        )

    def secrets(self) -> tuple[str, ...]:
        """Values no alert or log line may show: the SMTP password and the webhook URL's parts."""
        found = [self.smtp.password] if self.smtp and self.smtp.password else []
        if self.webhook_url:
            parts = urlsplit(self.webhook_url)
            found += [self.webhook_url, parts.path if len(parts.path) > 1 else "", parts.query]
        return tuple(s for s in found if s)


# --- Redaction ---------------------------------------------------------------------------------

_SECRET_ENV_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
# Shorter values and these words are not hidden: masking every "1" or "true" would mangle the
# text without protecting anything.
_MIN_SECRET_LEN = 4
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no", "on", "off"}
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*):(?P<password>[^\s'\"]+)@")
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)[\w.\-]*password=)[^&]*")
_SECRET_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key)[\w\-]*)"
    r"(?P<sep>['\"]?\s*[=:]\s*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s'\",;&}\])]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """A URL with its password (user info or `password=` query parameter) masked, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    # Edited as text: urlunsplit would turn `postgresql:///db?host=...` into `postgresql:/db?...`.
    head, mark, query = url.partition("?")
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        head = head.replace(parts.netloc, f"{parts.username or ''}:***@{host}", 1)
    return head + mark + _QUERY_PASSWORD.sub(r"\1***", query)


def url_secrets(url: str) -> list[str]:
    """The passwords a URL holds (user info, `password=` query parameters), as written in it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_PASSWORD.finditer(parts.query)]
    return [s for s in found if s]


def scrub_text(text: str, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """`text` without credentials: the given `secrets`, the values of secret-named environment
    variables and the passwords of URL-valued ones, any URL password and `password=...`-style pair."""
    if not text:
        return text
    values = {s for s in secrets if s and len(s) >= _MIN_SECRET_LEN}
    for name, value in (os.environ if environ is None else environ).items():
        value = (value or "").strip()
        found = [value] if any(m in name.upper() for m in _SECRET_ENV_MARKERS) else []
        found += url_secrets(value) if "://" in value else []
        values |= {v for v in found if len(v) >= _MIN_SECRET_LEN and v.lower() not in _NOT_SECRETS}
    # A password in a URL is percent-encoded there; it may appear in either form.
    values |= {quote(v, safe="") for v in values} | {unquote(v) for v in values}
    for value in sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True):
        text = text.replace(value, "***")
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    return _SECRET_KEY_VALUE.sub(_mask_value, text)


def _mask_value(match: re.Match[str]) -> str:
    quote_char = match.group("value")[0] if match.group("value")[0] in "'\"" else ""
    return f"{match.group('key')}{match.group('sep')}{quote_char}***{quote_char}"


ENV_DEPLOYMENT = "TOTESYS_DEPLOYMENT"
CONNECTION_SETTINGS = (ENV_SOURCE_URL, ENV_WAREHOUSE_URL, ENV_LAKE_URL)


class MissingSettingError(RuntimeError):
    """A deployment lacks a setting that the embedded demo would otherwise have supplied."""


def in_deployment() -> bool:
    """True where deploy/ says so (TOTESYS_DEPLOYMENT=1): the embedded demo is never used there."""
    return (env_or_none(ENV_DEPLOYMENT) or "0").lower() not in ("0", "false", "no")


def require_demo_allowed(name: str) -> None:
    """Refuse the embedded demo's stand-in for `name` in a deployment, naming what to set."""
    if in_deployment():
        raise MissingSettingError(
            f"{name} is not set, and a deployment ({ENV_DEPLOYMENT}=1) never falls back to the embedded "
            f"demo: set {name} (see deploy/secrets.md), or unset {ENV_DEPLOYMENT} to run the demo"
        )
