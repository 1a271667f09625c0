"""Run-failure alerts, end to end with real components.

A real Dagster run fails in a real instance; the real `run_failure_alerts` sensor is evaluated
against that instance and delivers to real listeners: moto's SNS (subscribed SQS queue, read back),
an HTTP server on 127.0.0.1 (the webhook) and a small SMTP server on 127.0.0.1 that speaks
EHLO/STARTTLS/AUTH/DATA (TLS with a throwaway CA trusted through SSL_CERT_FILE).
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import ipaddress
import json
import logging
import os
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from totesys_assets.automation.alerts import (
    MAX_ALERT_TEXT_CHARS,
    MAX_STEP_ERROR_CHARS,
    Alert,
    AlertDeliveryError,
    run_failure_alerts,
    send_alert,
    truncate,
)
from totesys_assets.settings import AlertSettings

SOURCE_PASSWORD = "hunter2"
ENV_PASSWORD = "w4rehouse-Pa55"  # the value of a *_PASSWORD env var, leaked into an error message
SMTP_PASSWORD = "smtp-s3cret-pw"
WEBHOOK_SECRET_PATH = "/services/T000/B000/webhook-secret-token"
FAILED_STEP = "raw__flaky_table"
ERROR_TEXT = "cannot connect to postgresql://u:***@db/x"


# --------------------------------------------------------------------------------------------------
# Listeners
# --------------------------------------------------------------------------------------------------


@dataclass
class WebhookListener:
    url: str
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
def webhook() -> Iterator[WebhookListener]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append({"path": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield WebhookListener(url=f"http://{host}:{port}{WEBHOOK_SECRET_PATH}", requests=received)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpMessage:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    tls: bool
    auth: tuple[str, str] | None

    @property
    def email(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)

    @property
    def body(self) -> str:
        return self.email.get_content()


@dataclass
class SmtpListener:
    host: str
    port: int
    ca_file: Path
    messages: list[SmtpMessage] = field(default_factory=list)


class _SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough RFC 5321 for smtplib: EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA."""

    def handle(self):
        server: _SmtpServer = self.server  # type: ignore[assignment]
        rfile, wfile, tls, auth = self.rfile, self.wfile, False, None
        mail_from, rcpt_to = "", []

        def reply(line: str) -> None:
            wfile.write(line.encode() + b"\r\n")
            wfile.flush()

        def read() -> str:
            return rfile.readline().decode("utf-8", "replace").rstrip("\r\n")

        reply("220 test-smtp ESMTP ready")
        while line := read():
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "EHLO":
                extensions = ["8BITMIME", "AUTH PLAIN LOGIN"]
                if not tls:
                    extensions.insert(0, "STARTTLS")
                reply("250-test-smtp")
                for ext in extensions[:-1]:
                    reply(f"250-{ext}")
                reply(f"250 {extensions[-1]}")
            elif verb == "HELO":
                reply("250 test-smtp")
            elif verb == "STARTTLS":
                reply("220 2.0.0 go ahead")
                conn = server.tls_context.wrap_socket(self.connection, server_side=True)
                rfile, wfile, tls = conn.makefile("rb"), conn.makefile("wb"), True
            elif verb == "AUTH":
                mechanism, _, initial = arg.partition(" ")
                if mechanism.upper() == "PLAIN":
                    if not initial:
                        reply("334 ")
                        initial = read()
                    _, user, password = base64.b64decode(initial).decode().split("\0")
                else:  # LOGIN
                    reply("334 VXNlcm5hbWU6")
                    user = base64.b64decode(read()).decode()
                    reply("334 UGFzc3dvcmQ6")
                    password = base64.b64decode(read()).decode()
                auth = (user, password)
                reply("235 2.7.0 authenticated")
            elif verb == "MAIL":
                mail_from, rcpt_to = arg.split(":", 1)[1].split()[0].strip("<>"), []
                reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt_to.append(arg.split(":", 1)[1].strip().strip("<>"))
                reply("250 2.1.5 ok")
            elif verb == "DATA":
                reply("354 end data with <CR><LF>.<CR><LF>")
                lines = []
                while (raw := rfile.readline()) not in (b".\r\n", b""):
                    lines.append(raw[1:] if raw.startswith(b"..") else raw)
                server.messages.append(SmtpMessage(mail_from, rcpt_to, b"".join(lines), tls, auth))
                reply("250 2.0.0 queued")
            elif verb in ("RSET", "NOOP"):
                reply("250 ok")
            elif verb == "QUIT":
                reply("221 bye")
                return
            else:
                reply("502 command not implemented")


class _SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tls_context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _SmtpHandler)
        self.tls_context = tls_context
        self.messages: list[SmtpMessage] = []


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway CA-flagged certificate for 127.0.0.1 / localhost (cryptography comes with moto)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "totesys test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpListener]:
    cert_file, key_file = _self_signed_cert(tmp_path)
    tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_context.load_cert_chain(cert_file, key_file)
    server = _SmtpServer(tls_context)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield SmtpListener(host=host, port=port, ca_file=cert_file, messages=server.messages)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SnsTopic:
    topic_arn: str
    queue_url: str
    sqs: object

    def notifications(self, expected: int = 1) -> list[dict]:
        found: list[dict] = []
        for _ in range(10):
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            found += [json.loads(m["Body"]) for m in response.get("Messages", [])]
            if len(found) >= expected:
                break
        return found


@pytest.fixture
def sns(s3_server) -> SnsTopic:
    """A topic on moto's SNS with an SQS queue subscribed, so a published alert can be read back."""
    kwargs = {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"}
    sns_client, sqs = boto3.client("sns", **kwargs), boto3.client("sqs", **kwargs)
    suffix = f"{os.getpid()}-{next(_counter)}"
    topic_arn = sns_client.create_topic(Name=f"totesys-alerts-{suffix}")["TopicArn"]
    queue_url = sqs.create_queue(QueueName=f"totesys-alerts-{suffix}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns_client.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return SnsTopic(topic_arn=topic_arn, queue_url=queue_url, sqs=sqs)


_counter = iter(range(1_000_000))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# A real failing run
# --------------------------------------------------------------------------------------------------


@dg.asset(key=["raw", "flaky_table"])
def flaky_table() -> None:
    raise RuntimeError(
        f"cannot connect to postgresql://u:{SOURCE_PASSWORD}@db/x "
        f"(fallback login with password {os.environ.get('WAREHOUSE_DB_PASSWORD')} refused)"
    )


@dg.asset(key=["raw", "steady_table"])
def steady_table() -> int:
    return 1


@dataclass
class FailedRun:
    instance: dg.DagsterInstance
    run: dg.DagsterRun
    failure_event: dg.DagsterEvent


@pytest.fixture
def clean_alert_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("TOTESYS_ALERT_") or name == "DAGSTER_WEBSERVER_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("WAREHOUSE_DB_PASSWORD", ENV_PASSWORD)
    return monkeypatch


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One real (sqlite) instance for the module, with run retries on as in deploy/dagster.yaml."""
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 2}}) as instance:
        yield instance


@pytest.fixture(scope="module")
def failed_run(instance) -> FailedRun:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WAREHOUSE_DB_PASSWORD", ENV_PASSWORD)
        result = dg.materialize([flaky_table, steady_table], instance=instance, raise_on_error=False)
    assert not result.success
    return FailedRun(instance, result.dagster_run, result.get_run_failure_event())


@pytest.fixture
def all_channels(clean_alert_env, sns, webhook, smtp, s3_server) -> pytest.MonkeyPatch:
    env = clean_alert_env
    env.setenv("AWS_ENDPOINT_URL_SNS", s3_server.endpoint_url)
    env.setenv("TOTESYS_ALERT_SNS_TOPIC_ARN", sns.topic_arn)
    env.setenv("TOTESYS_ALERT_WEBHOOK_URL", webhook.url)
    env.setenv("TOTESYS_ALERT_SMTP_HOST", smtp.host)
    env.setenv("TOTESYS_ALERT_SMTP_PORT", str(smtp.port))
    env.setenv("TOTESYS_ALERT_SMTP_FROM", "dagster@totes.example")
    env.setenv("TOTESYS_ALERT_SMTP_TO", "oncall@totes.example, data-team@totes.example")
    env.setenv("TOTESYS_ALERT_SMTP_USER", "alerts")
    env.setenv("TOTESYS_ALERT_SMTP_PASSWORD", SMTP_PASSWORD)
    env.setenv("TOTESYS_ALERT_SMTP_STARTTLS", "true")
    env.setenv("SSL_CERT_FILE", str(smtp.ca_file))  # trust the test server's certificate
    env.setenv("DAGSTER_WEBSERVER_URL", "http://dagster.totes.example:3000/")
    return env


def _evaluate(failed: FailedRun) -> None:
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_instance=failed.instance,
        dagster_run=failed.run,
        dagster_event=failed.failure_event,
    )
    run_failure_alerts(context)


def _fail(instance: dg.DagsterInstance, error: str) -> FailedRun:
    """A real run of one asset that raises RuntimeError(error)."""

    @dg.asset(key=["raw", "noisy_table"])
    def noisy_table() -> None:
        raise RuntimeError(error)

    result = dg.materialize([noisy_table], instance=instance, raise_on_error=False)
    return FailedRun(instance, result.dagster_run, result.get_run_failure_event())


SECRETS = (SOURCE_PASSWORD, ENV_PASSWORD, SMTP_PASSWORD, WEBHOOK_SECRET_PATH)


def _assert_alert(text: str, run_id: str) -> None:
    assert run_id in text
    assert FAILED_STEP in text
    assert ERROR_TEXT in text
    for secret in SECRETS:
        assert secret not in text


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_sensor_definition():
    assert run_failure_alerts.name == "run_failure_alerts"
    assert run_failure_alerts.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(run_failure_alerts, dg.RunStatusSensorDefinition)
    assert run_failure_alerts.sensor_type.value == "RUN_STATUS"
    # no monitored_jobs and not cross-location: every job of the code location it is loaded into
    assert not run_failure_alerts._monitored_jobs  # noqa: SLF001
    assert not run_failure_alerts._monitor_all_code_locations  # noqa: SLF001
    defs = dg.Definitions(assets=[flaky_table, steady_table], sensors=[run_failure_alerts])
    dg.Definitions.validate_loadable(defs)
    assert [s.name for s in defs.sensors] == ["run_failure_alerts"]


def test_failed_run_alerts_every_channel_without_secrets(failed_run, all_channels, sns, webhook, smtp, capfd):
    run_id = failed_run.run.run_id
    _evaluate(failed_run)

    # SNS -> SQS
    notifications = sns.notifications()
    assert len(notifications) == 1
    note = notifications[0]
    _assert_alert(note["Message"], run_id)
    assert note["Subject"].startswith("[Dagster] Run failed: __ephemeral_asset_job__")
    assert FAILED_STEP in note["Subject"]

    # webhook: Slack-compatible text plus structured fields
    assert len(webhook.requests) == 1
    request = webhook.requests[0]
    assert request["path"] == WEBHOOK_SECRET_PATH
    assert request["headers"]["Content-Type"].startswith("application/json")
    payload = json.loads(request["body"])
    _assert_alert(payload["text"], run_id)
    _assert_alert(request["body"].decode(), run_id)
    assert payload["run_id"] == run_id
    assert payload["job_name"] == "__ephemeral_asset_job__"
    assert [s["step_key"] for s in payload["failed_steps"]] == [FAILED_STEP]
    assert ERROR_TEXT in payload["failed_steps"][0]["error"]
    assert "fallback login with password *** refused" in payload["failed_steps"][0]["error"]
    assert payload["run_url"] == f"http://dagster.totes.example:3000/runs/{run_id}"

    # email over STARTTLS with login; the password went to the server, never into the mail
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail.tls is True
    assert mail.auth == ("alerts", SMTP_PASSWORD)
    assert mail.mail_from == "dagster@totes.example"
    assert mail.rcpt_to == ["oncall@totes.example", "data-team@totes.example"]
    assert mail.email["Subject"].startswith("[Dagster] Run failed")
    assert mail.email["X-Dagster-Run-Id"] == run_id
    _assert_alert(mail.body, run_id)
    for secret in SECRETS:
        assert secret.encode() not in mail.data

    # the alert is logged too, scrubbed the same way
    logged = capfd.readouterr()
    assert run_id in logged.err + logged.out
    assert f"{FAILED_STEP}\n" in logged.err + logged.out
    # the run's own logs show the raw exception; the sensor's log lines must not
    sensor_lines = [line for line in (logged.err + logged.out).splitlines() if "cannot connect" in line]
    assert any("u:***@db" in line for line in sensor_lines)


def test_sensor_tick_sees_failure_through_the_event_log(instance, failed_run, clean_alert_env, webhook):
    """The daemon's code path: a tick initialises the cursor, the next tick finds the failure in the
    instance's event log, alerts once, and a later tick does not alert again. Run retries are on,
    so the alert says the run will be retried."""
    clean_alert_env.setenv("TOTESYS_ALERT_WEBHOOK_URL", webhook.url)
    # the first tick only places the cursor after the failures already in the instance
    first = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance))
    assert first.skip_message and "Initiating" in first.skip_message
    assert webhook.requests == []

    result = dg.materialize([flaky_table], instance=instance, raise_on_error=False)
    assert not result.success
    second = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    reactions = second.dagster_run_reactions or []
    assert [r.dagster_run.run_id for r in reactions] == [result.run_id]
    assert reactions[0].error is None
    assert len(webhook.requests) == 1
    payload = json.loads(webhook.requests[0]["body"])
    _assert_alert(payload["text"], result.run_id)
    assert payload["retry"] == "attempt 1 of 3; Dagster will retry this run automatically"
    assert payload["run_url"] is None  # DAGSTER_WEBSERVER_URL unset

    third = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor))
    assert not third.dagster_run_reactions
    assert len(webhook.requests) == 1


def test_failing_channel_does_not_stop_the_others(failed_run, all_channels, sns, smtp, s3_server):
    env = all_channels
    # the general AWS_ENDPOINT_URL is honoured as well as the SNS-specific one
    env.delenv("AWS_ENDPOINT_URL_SNS")
    env.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    env.setenv("TOTESYS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_closed_port()}{WEBHOOK_SECRET_PATH}")

    with pytest.raises(AlertDeliveryError) as raised:
        _evaluate(failed_run)

    message = str(raised.value)
    assert "webhook (127.0.0.1)" in message
    assert "sns" not in message and "email" not in message
    for secret in SECRETS:
        assert secret not in message
    # SNS and email still delivered
    assert len(sns.notifications()) == 1
    assert len(smtp.messages) == 1
    _assert_alert(smtp.messages[0].body, failed_run.run.run_id)


def test_delivery_failure_fails_the_tick_without_secrets(instance, clean_alert_env):
    """In the daemon's code path an undeliverable alert makes the tick fail (visible in the UI) with
    a scrubbed error, and the cursor still moves on, so the alert is not re-sent forever."""
    url = f"http://127.0.0.1:{_closed_port()}{WEBHOOK_SECRET_PATH}"
    clean_alert_env.setenv("TOTESYS_ALERT_WEBHOOK_URL", url)
    first = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance))
    result = dg.materialize([flaky_table], instance=instance, raise_on_error=False)
    second = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor))
    (reaction,) = second.dagster_run_reactions
    assert reaction.dagster_run.run_id == result.run_id
    assert reaction.error is not None
    error = reaction.error.to_string()
    assert "AlertDeliveryError" in error and "webhook (127.0.0.1)" in error
    for secret in SECRETS:
        assert secret not in error
    assert second.cursor != first.cursor
    third = run_failure_alerts.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=second.cursor))
    assert not third.dagster_run_reactions


def test_misconfigured_channel_does_not_stop_the_others(clean_alert_env, webhook, caplog):
    env = clean_alert_env
    env.setenv("TOTESYS_ALERT_WEBHOOK_URL", webhook.url)
    env.setenv("TOTESYS_ALERT_SMTP_HOST", "127.0.0.1")  # but no TOTESYS_ALERT_SMTP_TO
    settings = AlertSettings.from_env()
    assert settings.smtp is None and "TOTESYS_ALERT_SMTP_TO" in (settings.smtp_error or "")

    alert = Alert(run_id="r1", job_name="j", failed_steps=(("s", "boom"),))
    with caplog.at_level(logging.INFO, logger="alerts-test"):
        failures = send_alert(alert, settings, logging.getLogger("alerts-test"))
    assert list(failures) == ["email"]
    assert "TOTESYS_ALERT_SMTP_TO" in failures["email"]
    assert len(webhook.requests) == 1
    # both channels were tried, in order: the webhook (named by its host) delivered, email did not
    assert [r.getMessage() for r in caplog.records] == [
        "Alert for run r1 sent via webhook (127.0.0.1)",
        f"Alert for run r1 could not be sent via email: {failures['email']}",
    ]


def test_run_failure_outside_steps_uses_the_failure_event(instance, clean_alert_env, webhook):
    """A run that fails without a failed step (run worker crash, start timeout): the run failure
    event's message is the alert."""
    clean_alert_env.setenv("TOTESYS_ALERT_WEBHOOK_URL", webhook.url)
    run = create_run_for_test(instance, job_name="raw_refresh_job", status=dg.DagsterRunStatus.STARTED)
    event = instance.report_run_failed(
        run, message=f"Run worker crashed while connected to postgresql://u:{SOURCE_PASSWORD}@db/x"
    )
    run = instance.get_run_by_id(run.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_instance=instance, dagster_run=run, dagster_event=event
    )
    run_failure_alerts(context)
    payload = json.loads(webhook.requests[0]["body"])
    assert payload["failed_steps"] == []
    assert payload["job_name"] == "raw_refresh_job"
    assert "Run worker crashed while connected to postgresql://u:***@db/x" in payload["text"]
    assert SOURCE_PASSWORD not in webhook.requests[0]["body"].decode()


def test_long_error_is_scrubbed_then_truncated(instance, clean_alert_env, webhook):
    clean_alert_env.setenv("TOTESYS_ALERT_WEBHOOK_URL", webhook.url)
    secret_url = f"postgresql://u:{SOURCE_PASSWORD}@db/x"
    # Place the password across the point where truncation cuts the head: truncating before
    # scrubbing would leave "postgresql://u:hun" in the alert, which no pattern recognises any more.
    # The step's error text is the exception's line, then its location. The cut does not move with
    # the text's exact length (only with the digits of the truncated count): the probe finds it.
    length, lead = 100_000, "RuntimeError: "
    cut = truncate("x" * length, MAX_STEP_ERROR_CHARS).index("\n")
    prefix = "A" * (cut - len(lead) - len("postgresql://u:hun"))
    huge = (
        prefix + secret_url + "B" * (length - len(lead) - len(prefix) - len(secret_url) - 11) + " final line"
    )
    assert len(lead + huge) == length and (lead + huge)[cut - 3 : cut] == "hun"

    _evaluate(_fail(instance, huge))
    (error,) = [s["error"] for s in json.loads(webhook.requests[0]["body"])["failed_steps"]]
    assert len(error) <= MAX_STEP_ERROR_CHARS
    assert "u:hun" not in error and SOURCE_PASSWORD not in error
    assert "u:***" in error
    assert "characters truncated" in error
    assert " final line\n  at File " in error and error.endswith(", in noisy_table")


def test_many_failed_steps_are_listed_up_to_the_limit():
    huge = "E" * 5000
    alert = Alert(run_id="r1", job_name="j", failed_steps=tuple((f"step_{i}", huge) for i in range(30)))
    assert len(alert.text) <= MAX_ALERT_TEXT_CHARS
    assert len(alert.payload()["failed_steps"]) == 10
    assert alert.title == "[Dagster] Run failed: j (step_0, step_1, step_2 +27)"
    short = Alert(run_id="r1", job_name="j", failed_steps=tuple((f"s{i}", "e") for i in range(30)))
    assert "and 20 more failed steps" in short.text


def test_truncate_keeps_head_and_tail():
    text = "HEAD" + "x" * 5000 + "TAIL"
    cut = truncate(text, 1000)
    assert len(cut) <= 1000
    assert cut.startswith("HEAD") and cut.endswith("TAIL")
    assert truncate("short", 1000) == "short"


def test_webhook_url_and_smtp_password_are_not_exposed(all_channels, webhook):
    settings = AlertSettings.from_env()
    assert WEBHOOK_SECRET_PATH not in repr(settings) and SMTP_PASSWORD not in repr(settings)
    assert {webhook.url, WEBHOOK_SECRET_PATH, SMTP_PASSWORD} <= set(settings.secrets())

    all_channels.delenv("TOTESYS_ALERT_SNS_TOPIC_ARN")
    all_channels.delenv("TOTESYS_ALERT_SMTP_HOST")
    all_channels.setenv("TOTESYS_ALERT_WEBHOOK_URL", "file:///etc/passwd")
    failures = send_alert(Alert(run_id="r1", job_name="j"), AlertSettings.from_env(), logging.getLogger())
    assert failures == {"webhook (?)": "ValueError: TOTESYS_ALERT_WEBHOOK_URL must be an http(s) URL"}
