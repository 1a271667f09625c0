"""Run-failure alerts: Dagster's run failure sensor, sending each failed run to SNS, a
Slack-compatible webhook and email, with secrets scrubbed, which Dagster's own alerting lacks.

Text is scrubbed (`settings.scrub_text`) before it is truncated, so a cut never leaves half a secret.
A failing channel does not stop the others; the tick then fails, so it shows in the UI.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import boto3
import dagster as dg
from dagster._core.storage import tags as run_tags

from totesys_assets.settings import ENV_ALERT_WEBHOOK_URL, AlertSettings, scrub_text

# Readable in Slack and email, well inside SNS's message limit.
MAX_STEP_ERROR_CHARS = 1500
MAX_STEPS_LISTED = 10
MAX_ALERT_TEXT_CHARS = 8000
TIMEOUT_S = 10.0


class AlertDeliveryError(Exception):
    """A channel could not deliver an alert (the others were still tried)."""


def truncate(text: str, limit: int) -> str:
    """The head (exception type and message) and the tail of `text`, with the cut marked."""
    if len(text) <= limit:
        return text
    marker = f"\n… [{len(text) - limit} characters truncated] …\n"
    keep = limit - len(marker)
    return text[: keep * 2 // 3] + marker + text[len(text) - (keep - keep * 2 // 3) :]


@dataclass(frozen=True)
class Alert:
    """One failed run, ready to send; its text fields are already scrubbed and truncated."""

    run_id: str
    job_name: str
    failed_steps: tuple[tuple[str, str], ...] = ()  # (step key, error)
    summary: str = ""
    run_url: str | None = None
    partition: str | None = None
    retry: str | None = None

    @property
    def title(self) -> str:
        steps = ", ".join(key for key, _ in self.failed_steps[:3])
        more = f" +{len(self.failed_steps) - 3}" if len(self.failed_steps) > 3 else ""
        return f"[Dagster] Run failed: {self.job_name}" + (f" ({steps}{more})" if steps else "")

    @property
    def text(self) -> str:
        fields = [("Run", self.run_id), ("Job", self.job_name), ("Partition", self.partition)]
        fields += [("Retry", self.retry), ("Open in Dagster", self.run_url)]
        lines = [self.title, "", *(f"{name}: {value}" for name, value in fields if value)]
        lines += ["", self.summary] if self.summary else []
        lines += ["", "Failed steps:"] if self.failed_steps else []
        for key, error in self.failed_steps[:MAX_STEPS_LISTED]:
            lines += [f"* {key}", *(f"    {line}" for line in error.splitlines())]
        if len(self.failed_steps) > MAX_STEPS_LISTED:
            lines.append(f"… and {len(self.failed_steps) - MAX_STEPS_LISTED} more failed steps")
        return truncate("\n".join(lines), MAX_ALERT_TEXT_CHARS)

    def payload(self) -> dict[str, Any]:
        """Slack-compatible JSON (`text`) with the structured fields beside it."""
        steps = [{"step_key": k, "error": e} for k, e in self.failed_steps[:MAX_STEPS_LISTED]]
        return {"text": self.text, "title": self.title, **asdict(self), "failed_steps": steps}


def _error_text(error: Any) -> str:
    """The messages of an error's chain, each with its innermost frame's location, without Dagster's
    step wrapper or source lines (they can hold literals no scrubbing recognises)."""
    messages: list[str] = []
    while error is not None:
        if not (error.cls_name == "DagsterExecutionStepExecutionError" and error.cause):
            messages.append((error.message or "").strip() or error.cls_name or "error")
            where = error.stack[-1].strip().splitlines()[0].strip() if error.stack else ""
            messages[-1] += f"\n  at {where}" if where.startswith("File ") else ""
        error = error.cause or error.context
    return "\ncaused by: ".join(messages)


def _partition(tags: Mapping[str, str]) -> str | None:
    start = tags.get(run_tags.ASSET_PARTITION_RANGE_START_TAG)
    end = tags.get(run_tags.ASSET_PARTITION_RANGE_END_TAG)
    if tags.get(run_tags.PARTITION_NAME_TAG) or not (start and end):
        return tags.get(run_tags.PARTITION_NAME_TAG)
    return start if start == end else f"{start}…{end}"


def _retry(tags: Mapping[str, str], instance: dg.DagsterInstance) -> str | None:
    """Which attempt this was, and whether Dagster's run retries will launch another."""
    number, will_retry = int(tags.get(run_tags.RETRY_NUMBER_TAG) or 0), tags.get(run_tags.WILL_RETRY_TAG)
    if will_retry is None and not number:
        return None
    most = tags.get(run_tags.MAX_RETRIES_TAG, "")
    if not most.isdigit() and instance.run_retries_enabled:
        most = str(instance.run_retries_max_retries)
    attempt = f"attempt {number + 1}" + (f" of {int(most) + 1}" if most.isdigit() else "")
    if will_retry == "true":
        return f"{attempt}; Dagster will retry this run automatically"
    return f"{attempt}; no further automatic retry"


def build_alert(context: dg.RunFailureSensorContext, settings: AlertSettings) -> Alert:
    """The scrubbed alert of a failed run, from its RUN_FAILURE and STEP_FAILURE events."""

    def clean(text: str, limit: int = MAX_ALERT_TEXT_CHARS) -> str:
        return truncate(scrub_text(text, settings.secrets()), limit)

    run, failure, base = context.dagster_run, context.failure_event, settings.webserver_url
    errors = [
        (e.step_key or "?", _error_text(e.step_failure_data.error)) for e in context.get_step_failure_events()
    ]
    summary = (failure.message or "") if failure else ""
    run_error = getattr(failure.event_specific_data, "error", None) if failure else None
    if run_error is not None and not errors:  # failed outside any step: the error is the run's
        summary = f"{summary}\n{_error_text(run_error)}".strip()
    partition = _partition(run.tags)
    return Alert(
        run_id=run.run_id,
        job_name=run.job_name,
        failed_steps=tuple((key, clean(error, MAX_STEP_ERROR_CHARS)) for key, error in errors),
        summary=clean(summary or f"Run {run.run_id} of {run.job_name} failed."),
        run_url=clean(f"{base.rstrip('/')}/runs/{run.run_id}") if base else None,
        partition=clean(partition) if partition else None,
        retry=_retry(run.tags, context.instance),
    )


def _publish_sns(topic_arn: str, alert: Alert) -> None:
    """SNS publish with boto3's own configuration (AWS_ENDPOINT_URL_SNS too), in the topic's region."""
    region = topic_arn.split(":")[3] if topic_arn.count(":") >= 5 else None
    attributes = {"run_id": alert.run_id, "job_name": alert.job_name}
    boto3.client("sns", region_name=region or None).publish(
        TopicArn=topic_arn,
        Subject=alert.title.encode("ascii", "replace").decode()[:99],  # SNS: ASCII, under 100
        Message=alert.text,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def _post_webhook(url: str, alert: Alert) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{ENV_ALERT_WEBHOOK_URL} must be an http(s) URL")
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "totesys-alerts"}
    body = json.dumps(alert.payload()).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:  # the errors never name the URL: it is a credential
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # nosec B310
            response.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"webhook answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise RuntimeError(f"webhook unreachable: {exc.reason}") from None


def _send_email(settings: AlertSettings, alert: Alert) -> None:
    """Plain-text email by smtplib: Dagster's email sensor always logs in and sends unescaped HTML."""
    if (smtp := settings.smtp) is None:
        raise ValueError(settings.smtp_error)
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = alert.title, smtp.sender, ", ".join(smtp.recipients)
    message["X-Dagster-Run-Id"] = alert.run_id
    message.set_content(alert.text)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=TIMEOUT_S) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(message, to_addrs=list(smtp.recipients))


def send_alert(alert: Alert, settings: AlertSettings, log: Any) -> dict[str, str]:
    """Send `alert` to every configured channel; returns {channel: scrubbed error} of those that failed.

    A webhook is named by its host only: its URL is a credential."""
    channels = {"sns": partial(_publish_sns, settings.sns_topic_arn)} if settings.sns_topic_arn else {}
    if url := settings.webhook_url:
        channels[f"webhook ({urlsplit(url).hostname or '?'})"] = partial(_post_webhook, url)
    if settings.smtp or settings.smtp_error:
        channels["email"] = partial(_send_email, settings)
    failures: dict[str, str] = {}
    for name, send in channels.items():
        try:
            send(alert)
        except Exception as exc:  # one broken channel must not stop the others
            failures[name] = truncate(scrub_text(f"{type(exc).__name__}: {exc}", settings.secrets()), 500)
            log.error(f"Alert for run {alert.run_id} could not be sent via {name}: {failures[name]}")
        else:
            log.info(f"Alert for run {alert.run_id} sent via {name}")
    return failures


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Logs every failed run of this code location and sends it to the TOTESYS_ALERT_* channels.",
)
def run_failure_alerts(context: dg.RunFailureSensorContext) -> None:
    settings = AlertSettings.from_env()
    alert = build_alert(context, settings)
    context.log.error(alert.text)
    if failures := send_alert(alert, settings, context.log):
        reasons = "; ".join(f"{name}: {reason}" for name, reason in failures.items())
        raise AlertDeliveryError(f"Alert for run {alert.run_id} not delivered via: {reasons}")
