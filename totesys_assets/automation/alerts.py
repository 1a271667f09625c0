"""Run-failure alerts: a run failure sensor that reports failed runs to SNS, a webhook and/or email.

The sensor (`run_failure_alerts`, RUNNING by default) watches every job of this code location. For a
failed run it builds an `Alert` (run id, job, partition, the failed step keys with their errors, a
link to the run when `DAGSTER_WEBSERVER_URL` is set), always logs it, and sends it to every channel
configured through environment variables:

| variable | channel |
|---|---|
| `TOTESYS_ALERT_SNS_TOPIC_ARN` | Amazon SNS `publish` (standard AWS config: credentials, region, `AWS_ENDPOINT_URL_SNS` / `AWS_ENDPOINT_URL`) |
| `TOTESYS_ALERT_WEBHOOK_URL` | HTTP POST of JSON: Slack-compatible `{"text": ...}` plus structured fields |
| `TOTESYS_ALERT_SMTP_HOST` (+ `_PORT`, `_FROM`, `_TO`, `_USER`, `_PASSWORD`, `_STARTTLS`) | email over SMTP |

A failing channel does not stop the others; once every channel has been tried the sensor raises
`AlertDeliveryError`, so the broken channel shows up as a failed sensor tick in the UI.

Secrets never reach an alert: error text is scrubbed of passwords in URLs (`scheme://user:***@`),
of `password=...`-style key/values and of the values of environment variables whose names contain
PASSWORD, SECRET, TOKEN or KEY (and of passwords embedded in any URL-valued environment variable),
*before* it is truncated, so a cut can never leave half a secret that no longer matches.

The channel logic is plain Python (`Alert`, `channels_from_env`, `send_alert`) and works without a
sensor.
"""

from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    MAX_RETRIES_TAG,
    PARTITION_NAME_TAG,
    RETRY_NUMBER_TAG,
    WILL_RETRY_TAG,
)

if TYPE_CHECKING:
    from dagster._utils.error import SerializableErrorInfo

logger = logging.getLogger(__name__)

ENV_WEBSERVER_URL = "DAGSTER_WEBSERVER_URL"
ENV_SNS_TOPIC_ARN = "TOTESYS_ALERT_SNS_TOPIC_ARN"
ENV_WEBHOOK_URL = "TOTESYS_ALERT_WEBHOOK_URL"
ENV_SMTP_HOST = "TOTESYS_ALERT_SMTP_HOST"
ENV_SMTP_PORT = "TOTESYS_ALERT_SMTP_PORT"
ENV_SMTP_FROM = "TOTESYS_ALERT_SMTP_FROM"
ENV_SMTP_TO = "TOTESYS_ALERT_SMTP_TO"
ENV_SMTP_USER = "TOTESYS_ALERT_SMTP_USER"
ENV_SMTP_PASSWORD = "TOTESYS_ALERT_SMTP_PASSWORD"
ENV_SMTP_STARTTLS = "TOTESYS_ALERT_SMTP_STARTTLS"

#: Limits that keep an alert readable in Slack/email and well inside SNS's 256 KB message limit.
MAX_STEP_ERROR_CHARS = 1500
MAX_STEPS_LISTED = 10
MAX_ALERT_TEXT_CHARS = 8000
SNS_SUBJECT_MAX_CHARS = 100
CHANNEL_TIMEOUT_SECONDS = 10.0

# --------------------------------------------------------------------------------------------------
# Scrubbing and truncation
# --------------------------------------------------------------------------------------------------

SECRET_ENV_NAME_MARKERS = ("PASSWORD", "SECRET", "TOKEN", "KEY")
# Values shorter than this (or these words) are not treated as secrets: scrubbing "1" or "true"
# everywhere would mangle the message without protecting anything.
_MIN_SECRET_LEN = 4
_NOT_SECRETS = {"true", "false", "none", "null", "yes", "no", "on", "off"}

_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/?#@'\"]*):(?P<password>[^\s'\"]+)@"
)
_SECRET_KEY_VALUE = re.compile(
    r"(?P<key>\b[\w.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key)[\w\-]*)"
    r"(?P<sep>['\"]?\s*[=:]\s*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s'\",;&}\])]+)",
    re.IGNORECASE,
)


def _secret_env_values(environ: Mapping[str, str]) -> list[str]:
    """Values to hide: env vars named like secrets, and passwords inside URL-valued env vars."""
    values: set[str] = set()
    for name, value in environ.items():
        value = (value or "").strip()
        if not value:
            continue
        if any(marker in name.upper() for marker in SECRET_ENV_NAME_MARKERS):
            values.add(value)
        if "://" in value:
            for match in _URL_USERINFO.finditer(value):
                values.add(match.group("password"))
    usable = {v for v in values if len(v) >= _MIN_SECRET_LEN and v.lower() not in _NOT_SECRETS}
    # A password embedded in a URL is percent-encoded there; it may appear in either form.
    usable |= {quote(v, safe="") for v in usable} | {unquote(v) for v in usable}
    usable = {v for v in usable if len(v) >= _MIN_SECRET_LEN}
    return sorted(usable, key=len, reverse=True)


def _mask_key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote_char = value[0] if value[0] in "'\"" else ""
    return f"{match.group('key')}{match.group('sep')}{quote_char}***{quote_char}"


def scrub(text: str, environ: Mapping[str, str] | None = None, extra_secrets: Iterable[str] = ()) -> str:
    """`text` with credentials removed: URL passwords, password=... pairs and secret env values."""
    if not text:
        return text
    environ = os.environ if environ is None else environ
    secrets = sorted(
        {*_secret_env_values(environ), *(s for s in extra_secrets if s and len(s) >= _MIN_SECRET_LEN)},
        key=len,
        reverse=True,
    )
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    text = _SECRET_KEY_VALUE.sub(_mask_key_value, text)
    return text


def truncate(text: str, limit: int) -> str:
    """Keep the head (where the exception type and message are) and the tail, mark the cut."""
    if len(text) <= limit:
        return text
    marker = f"\n… [{len(text) - limit} characters truncated] …\n"
    keep = max(limit - len(marker), 0)
    head = keep * 2 // 3
    tail = keep - head
    return text[:head] + marker + (text[-tail:] if tail else "")


# --------------------------------------------------------------------------------------------------
# The alert
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepFailure:
    step_key: str
    error: str


@dataclass(frozen=True)
class Alert:
    """One failed run, ready to send. Build it with `alert_from_run_failure` (already scrubbed)."""

    run_id: str
    job_name: str
    failed_steps: tuple[StepFailure, ...] = ()
    summary: str = ""
    run_url: str | None = None
    partition: str | None = None
    retry: str | None = None
    code_location: str | None = None

    @property
    def title(self) -> str:
        steps = ", ".join(s.step_key for s in self.failed_steps[:3])
        more = f" +{len(self.failed_steps) - 3}" if len(self.failed_steps) > 3 else ""
        where = f" ({steps}{more})" if steps else ""
        return f"[Dagster] Run failed: {self.job_name}{where}"

    @property
    def text(self) -> str:
        lines = [self.title, "", f"Run: {self.run_id}", f"Job: {self.job_name}"]
        if self.code_location:
            lines.append(f"Code location: {self.code_location}")
        if self.partition:
            lines.append(f"Partition: {self.partition}")
        if self.retry:
            lines.append(f"Retry: {self.retry}")
        if self.run_url:
            lines.append(f"Open in Dagster: {self.run_url}")
        if self.summary:
            lines += ["", self.summary]
        shown = self.failed_steps[:MAX_STEPS_LISTED]
        if shown:
            lines += ["", "Failed steps:"]
            for step in shown:
                lines.append(f"* {step.step_key}")
                lines += [f"    {line}" for line in step.error.splitlines()]
            if len(self.failed_steps) > len(shown):
                lines.append(f"… and {len(self.failed_steps) - len(shown)} more failed steps")
        return truncate("\n".join(lines), MAX_ALERT_TEXT_CHARS)

    def to_payload(self) -> dict[str, Any]:
        """Slack-compatible (`text`) JSON with the structured fields beside it."""
        return {
            "text": self.text,
            "title": self.title,
            "run_id": self.run_id,
            "job_name": self.job_name,
            "code_location": self.code_location,
            "partition": self.partition,
            "retry": self.retry,
            "run_url": self.run_url,
            "summary": self.summary,
            "failed_steps": [
                {"step_key": s.step_key, "error": s.error} for s in self.failed_steps[:MAX_STEPS_LISTED]
            ],
        }

    def scrubbed(self, environ: Mapping[str, str] | None = None, extra_secrets: Iterable[str] = ()) -> Alert:
        """A copy with every free-text field scrubbed, then truncated."""
        extra = tuple(extra_secrets)

        def clean(text: str | None, limit: int = MAX_ALERT_TEXT_CHARS) -> str | None:
            return None if text is None else truncate(scrub(text, environ, extra), limit)

        return replace(
            self,
            failed_steps=tuple(
                StepFailure(step_key=s.step_key, error=clean(s.error, MAX_STEP_ERROR_CHARS) or "")
                for s in self.failed_steps
            ),
            summary=clean(self.summary) or "",
            run_url=clean(self.run_url),
            partition=clean(self.partition),
        )


def format_error(error: SerializableErrorInfo | None) -> str:
    """The exception chain of a Dagster error (the raised error, then "caused by" lines), each with
    the location of its innermost frame but never source lines.

    Dagster wraps user exceptions in `DagsterExecutionStepExecutionError("Error occurred while
    executing op ...")`; that wrapper adds nothing, so it is skipped when it has a cause.
    """
    chain: list[SerializableErrorInfo] = []
    seen = 0
    while error is not None and seen < 10:
        chain.append(error)
        error = error.cause or error.context
        seen += 1
    if len(chain) > 1 and chain[0].cls_name == "DagsterExecutionStepExecutionError":
        chain = chain[1:]
    if not chain:
        return ""
    lines: list[str] = []
    for i, err in enumerate(chain):
        message = (err.message or "").strip() or (err.cls_name or "error")
        lines.append(message if i == 0 else f"caused by: {message}")
        # Only the location of the innermost frame ("File ..., line N, in fn"), never the source
        # line: source lines can hold literals the scrubber does not recognise.
        if err.stack:
            location = err.stack[-1].strip().splitlines()[0].strip()
            if location.startswith("File "):
                lines.append(f"  at {location}")
    return "\n".join(lines)


def _partition_of(tags: Mapping[str, str]) -> str | None:
    if tags.get(PARTITION_NAME_TAG):
        return tags[PARTITION_NAME_TAG]
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}…{end}"
    return None


def _retry_of(run: dg.DagsterRun, instance: dg.DagsterInstance | None) -> str | None:
    tags = run.tags
    will_retry = tags.get(WILL_RETRY_TAG)
    retry_number = int(tags.get(RETRY_NUMBER_TAG) or 0)
    if will_retry is None and not retry_number:
        return None
    max_retries: int | None = None
    if tags.get(MAX_RETRIES_TAG, "").isdigit():
        max_retries = int(tags[MAX_RETRIES_TAG])
    elif instance is not None and instance.run_retries_enabled:
        max_retries = instance.run_retries_max_retries
    attempt = f"attempt {retry_number + 1}" + (f" of {max_retries + 1}" if max_retries is not None else "")
    if will_retry == "true":
        return f"{attempt}; Dagster will retry this run automatically"
    return f"{attempt}; no further automatic retry"


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    base = ((os.environ if environ is None else environ).get(ENV_WEBSERVER_URL) or "").strip()
    return f"{base.rstrip('/')}/runs/{run_id}" if base else None


def alert_from_run_failure(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent | None,
    step_failure_events: Sequence[dg.DagsterEvent],
    instance: dg.DagsterInstance | None = None,
    environ: Mapping[str, str] | None = None,
) -> Alert:
    """The (scrubbed) alert for a failed run from its RUN_FAILURE and STEP_FAILURE events."""
    steps: list[StepFailure] = []
    for event in step_failure_events:
        data = event.step_failure_data
        error_text = format_error(data.error) if data is not None else ""
        if data is not None and data.user_failure_data and data.user_failure_data.description:
            description = data.user_failure_data.description
            if description not in error_text:
                error_text = f"{description}\n{error_text}".strip()
        steps.append(StepFailure(step_key=event.step_key or "?", error=error_text or (event.message or "")))

    summary = (failure_event.message or "") if failure_event is not None else ""
    if not steps and failure_event is not None:
        # The run failed outside any step (run worker crash, start timeout, resource/plan error):
        # the run failure event carries the error itself.
        job_failure = failure_event.event_specific_data
        error = getattr(job_failure, "error", None)
        if error is not None:
            summary = f"{summary}\n{format_error(error)}".strip()
    if not summary:
        summary = f"Run {run.run_id} of {run.job_name} failed."

    origin = run.remote_job_origin
    alert = Alert(
        run_id=run.run_id,
        job_name=run.job_name,
        failed_steps=tuple(steps),
        summary=summary,
        run_url=run_url(run.run_id, environ),
        partition=_partition_of(run.tags),
        retry=_retry_of(run, instance),
        code_location=origin.repository_origin.code_location_origin.location_name if origin else None,
    )
    return alert.scrubbed(environ)


# --------------------------------------------------------------------------------------------------
# Channels
# --------------------------------------------------------------------------------------------------


class AlertChannel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...

    def secrets(self) -> tuple[str, ...]:
        """Values this channel holds that must never appear in an alert or a log line."""
        ...


@dataclass
class SnsChannel:
    """Amazon SNS `publish`. boto3's standard configuration applies (credentials, region,
    `AWS_ENDPOINT_URL_SNS` and `AWS_ENDPOINT_URL`); the region defaults to the topic ARN's."""

    topic_arn: str
    name: str = "sns"

    def secrets(self) -> tuple[str, ...]:
        return ()

    def send(self, alert: Alert) -> None:
        import boto3

        parts = self.topic_arn.split(":")
        region = (
            os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or (parts[3] if len(parts) > 3 and parts[3] else None)
        )
        client = boto3.client("sns", region_name=region)
        subject = alert.title.encode("ascii", "replace").decode("ascii").replace("\n", " ")
        if len(subject) > SNS_SUBJECT_MAX_CHARS - 1:
            subject = subject[: SNS_SUBJECT_MAX_CHARS - 2] + "~"
        client.publish(
            TopicArn=self.topic_arn,
            Subject=subject,
            Message=alert.text,
            MessageAttributes={
                "run_id": {"DataType": "String", "StringValue": alert.run_id},
                "job_name": {"DataType": "String", "StringValue": alert.job_name},
            },
        )


@dataclass
class WebhookChannel:
    """HTTP POST of `Alert.to_payload()` as JSON (Slack incoming webhooks read `text`).

    The URL is treated as a secret (Slack/Teams webhook URLs are credentials): it is not shown in
    the channel's repr or in log lines; only its host is."""

    url: str = field(repr=False)
    timeout: float = CHANNEL_TIMEOUT_SECONDS
    name: str = "webhook"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{ENV_WEBHOOK_URL} must be an http(s) URL")
        self.name = f"webhook ({parts.hostname})"

    def secrets(self) -> tuple[str, ...]:
        parts = urlsplit(self.url)
        return tuple(s for s in (self.url, parts.path if len(parts.path) > 1 else "", parts.query) if s)

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.to_payload()).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __post_init__
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "totesys-alerts"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            # HTTPError's str() holds only the status line; never include the URL.
            raise RuntimeError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise RuntimeError(f"webhook unreachable: {exc.reason}") from None


def _bool_env(value: str | None) -> bool | None:
    if value is None or not value.strip():
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV_SMTP_STARTTLS} must be true or false, got {value!r}")


@dataclass
class SmtpChannel:
    """Email over SMTP (smtplib). STARTTLS defaults on when credentials are set, so a password is
    never sent in clear unless `TOTESYS_ALERT_SMTP_STARTTLS=false` says so explicitly."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = CHANNEL_TIMEOUT_SECONDS
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    name: str = "email"

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = alert.title
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["X-Dagster-Run-Id"] = alert.run_id
        message.set_content(alert.text)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            if self.starttls:
                smtp.starttls(context=self.ssl_context or ssl.create_default_context())
                smtp.ehlo()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message, from_addr=self.sender, to_addrs=list(self.recipients))


@dataclass
class MisconfiguredChannel:
    """A channel whose environment variables are invalid: sending reports the configuration error,
    so the other channels still deliver and the problem shows up as a failed sensor tick."""

    name: str
    error: str

    def secrets(self) -> tuple[str, ...]:
        return ()

    def send(self, alert: Alert) -> None:
        raise ValueError(self.error)


def _smtp_from_env(get) -> SmtpChannel:
    user, password = get(ENV_SMTP_USER), get(ENV_SMTP_PASSWORD)
    starttls = _bool_env(get(ENV_SMTP_STARTTLS))
    if starttls is None:
        starttls = bool(user)
    port_text = get(ENV_SMTP_PORT) or ("587" if starttls else "25")
    if not port_text.isdigit():
        raise ValueError(f"{ENV_SMTP_PORT} must be a port number, got {port_text!r}")
    recipients = tuple(r.strip() for r in (get(ENV_SMTP_TO) or "").split(",") if r.strip())
    if not recipients:
        raise ValueError(f"{ENV_SMTP_HOST} is set but {ENV_SMTP_TO} lists no recipients")
    return SmtpChannel(
        host=get(ENV_SMTP_HOST),
        port=int(port_text),
        sender=get(ENV_SMTP_FROM) or f"dagster-alerts@{socket.getfqdn() or 'localhost'}",
        recipients=recipients,
        user=user,
        password=password,
        starttls=starttls,
    )


def channels_from_env(environ: Mapping[str, str] | None = None) -> list[AlertChannel]:
    """The channels configured by environment variables (none: the alert is only logged).

    An invalid setting yields a `MisconfiguredChannel` instead of raising, so it cannot stop the
    correctly configured channels."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = (env.get(name) or "").strip()
        return value or None

    channels: list[AlertChannel] = []
    if topic := get(ENV_SNS_TOPIC_ARN):
        channels.append(SnsChannel(topic_arn=topic))
    if url := get(ENV_WEBHOOK_URL):
        try:
            channels.append(WebhookChannel(url=url))
        except ValueError as exc:
            channels.append(MisconfiguredChannel(name="webhook", error=str(exc)))
    if get(ENV_SMTP_HOST):
        try:
            channels.append(_smtp_from_env(get))
        except ValueError as exc:
            channels.append(MisconfiguredChannel(name="email", error=str(exc)))
    return channels


class AlertDeliveryError(Exception):
    """At least one channel could not deliver an alert (the others were still tried)."""


def send_alert(
    alert: Alert,
    channels: Sequence[AlertChannel],
    log: logging.Logger | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Send `alert` to every channel; returns `{channel name: error}` for the channels that failed.

    The alert is scrubbed again here (also of the channels' own secrets), so an `Alert` built by
    hand is as safe as one from `alert_from_run_failure`.
    """
    log = log or logger
    channel_secrets = [s for channel in channels for s in channel.secrets()]
    alert = alert.scrubbed(environ, channel_secrets)
    failures: dict[str, str] = {}
    for channel in channels:
        try:
            channel.send(alert)
        except Exception as exc:  # one broken channel must not stop the others
            reason = scrub(f"{type(exc).__name__}: {exc}", environ, channel_secrets)
            failures[channel.name] = truncate(reason, 500)
            log.error(f"Alert for run {alert.run_id} could not be sent via {channel.name}: {reason}")
        else:
            log.info(f"Alert for run {alert.run_id} sent via {channel.name}")
    return failures


# --------------------------------------------------------------------------------------------------
# The sensor
# --------------------------------------------------------------------------------------------------


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on every failed run of this code location: logs it and sends it to the channels "
        "configured by TOTESYS_ALERT_* environment variables (SNS, webhook, email)."
    ),
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    try:
        step_failures = context.get_step_failure_events()
    except Exception as exc:  # the alert matters more than its details
        context.log.warning(f"Could not read the step failures of run {run.run_id}: {type(exc).__name__}")
        step_failures = []
    alert = alert_from_run_failure(run, context.failure_event, step_failures, context.instance)
    context.log.error(alert.text)

    channels = channels_from_env()
    if not channels:
        return
    failures = send_alert(alert, channels, log=context.log)
    if failures:
        raise AlertDeliveryError(
            f"Alert for run {run.run_id} not delivered via: "
            + "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        )
