"""The configuration contract: the environment variables, their defaults, and the one redaction."""

from __future__ import annotations

import os

import pytest

from totesys_assets import settings
from totesys_assets.settings import AlertSettings, redact_url, scrub_text, url_secrets


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:hunter2@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u:p%40ss@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("postgresql:///x?host=/tmp&password=hunter2", "postgresql:///x?host=/tmp&password=***"),
        ("postgresql://db/x?password=hunter2&user=u", "postgresql://db/x?password=***&user=u"),
        ("postgresql://db/x?PASSWORD=hunter2", "postgresql://db/x?PASSWORD=***"),
        ("postgresql://db/x?sslpassword=hunter2", "postgresql://db/x?sslpassword=***"),
        ("postgresql://u@db/x?sslmode=require", "postgresql://u@db/x?sslmode=require"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("postgresql://[::1", "<unparseable url>"),
    ],
)
def test_redact_url_masks_the_password_wherever_the_url_holds_it(url, expected):
    assert redact_url(url) == expected


def test_url_secrets_are_the_passwords_as_written():
    assert url_secrets("postgresql://u:p%40ss@db/x?password=q-s3cret&password=") == ["p%40ss", "q-s3cret"]
    assert url_secrets("postgresql://u@db/x") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u:hunter2@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql+psycopg2://admin:p@ss:w0rd@host/db?x=1", "postgresql+psycopg2://admin:***@host/db?x=1"),
        (
            "cannot reach postgresql://db/x?user=u&password=hunter2 now",
            "cannot reach postgresql://db/x?user=u&password=*** now",
        ),
        ("host=db user=u password=hunter2 dbname=x", "host=db user=u password=*** dbname=x"),
        ('{"password": "two words", "user": "u"}', '{"password": "***", "user": "u"}'),
        ("PGPASSWORD='hunter2' psql", "PGPASSWORD='***' psql"),
        ("https://h/p?access_key=AKIA123&x=1", "https://h/p?access_key=***&x=1"),
        ("api_token: abc.def", "api_token: ***"),
        ("password authentication failed for user u", "password authentication failed for user u"),
        ("no secrets here: s3://bucket/raw/x.parquet", "no secrets here: s3://bucket/raw/x.parquet"),
    ],
)
def test_scrub_patterns(raw, expected):
    assert scrub_text(raw, environ={}) == expected


def test_scrub_env_values():
    environ = {
        "TOTESYS_SOURCE_PASSWORD": "s0urce-pw",
        "MY_API_TOKEN": "tok-123456",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
        "TOTESYS_DB_URL": "postgresql://u:p%40ss-in-url@db/totesys",
        "WAREHOUSE_DB_URL": "postgresql:///warehouse?host=/tmp&password=q-s3cret",
        "FEATURE_KEY_ENABLED": "true",  # not a secret value
        "SHORT_TOKEN": "ab",  # too short to scrub safely
    }
    text = "s0urce-pw tok-123456 wJalrXUtnFEMI/K7MDENG p%40ss-in-url p@ss-in-url? q-s3cret true ab"
    assert scrub_text(text, environ=environ) == "*** *** *** *** ***? *** true ab"


def test_scrub_given_secrets_in_both_encodings():
    assert scrub_text("a p@ss:word b p%40ss%3Aword c", ["p%40ss%3Aword"], environ={}) == "a *** b *** c"
    assert scrub_text("abc", ["abc"], environ={}) == "abc"  # too short to hide safely


def test_automation_timing_defaults_and_overrides(monkeypatch):
    for name in (
        "TOTESYS_REFRESH_CRON",
        "TOTESYS_HEARTBEAT_CRON",
        "TOTESYS_DEMO_CRON",
        "TOTESYS_SENSOR_INTERVAL_S",
        "TOTESYS_AUTOMATION_INTERVAL_S",
        "TOTESYS_FULL_CHECK_S",
    ):
        monkeypatch.delenv(name, raising=False)
    assert settings.refresh_cron() == "*/10 * * * *"
    assert settings.heartbeat_cron() == "*/20 * * * *"
    assert settings.demo_cron() == "* * * * *"
    assert settings.sensor_interval_s() == 4
    assert settings.automation_interval_s() == 15
    assert settings.full_check_s() == 600

    monkeypatch.setenv("TOTESYS_REFRESH_CRON", "0 * * * *")
    monkeypatch.setenv("TOTESYS_SENSOR_INTERVAL_S", "5")
    monkeypatch.setenv("TOTESYS_AUTOMATION_INTERVAL_S", "soon")
    assert settings.refresh_cron() == "0 * * * *"
    assert settings.sensor_interval_s() == 5
    with pytest.raises(ValueError, match="TOTESYS_AUTOMATION_INTERVAL_S must be a whole number"):
        settings.automation_interval_s()


@pytest.fixture
def no_alert_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("TOTESYS_ALERT_") or name == "DAGSTER_WEBSERVER_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_alert_settings_from_the_environment(no_alert_env):
    env = no_alert_env
    assert AlertSettings.from_env() == AlertSettings()

    env.setenv("TOTESYS_ALERT_SMTP_HOST", "smtp.example")
    env.setenv("TOTESYS_ALERT_SMTP_TO", "a@example, b@example")
    plain = AlertSettings.from_env().smtp
    assert plain is not None
    assert (plain.port, plain.starttls, plain.user, plain.recipients) == (
        25,
        False,
        None,
        ("a@example", "b@example"),
    )

    env.setenv("TOTESYS_ALERT_SMTP_USER", "alerts")  # credentials: STARTTLS on port 587 by default
    env.setenv("TOTESYS_ALERT_SMTP_FROM", "dagster@example")
    login = AlertSettings.from_env().smtp
    assert login is not None and (login.port, login.starttls, login.sender) == (587, True, "dagster@example")

    env.setenv("TOTESYS_ALERT_SMTP_STARTTLS", "maybe")
    broken = AlertSettings.from_env()
    assert broken.smtp is None and "TOTESYS_ALERT_SMTP_STARTTLS must be true or false" in (
        broken.smtp_error or ""
    )
    env.setenv("TOTESYS_ALERT_SMTP_STARTTLS", "false")
    env.setenv("TOTESYS_ALERT_SMTP_PORT", "smtp")
    assert "TOTESYS_ALERT_SMTP_PORT must be a port number" in (AlertSettings.from_env().smtp_error or "")
