"""Errors that say what to do, and whether a retry can help.

A wrong password, a missing database, missing credentials or a missing bucket cannot heal by
waiting, so they are raised as `dg.Failure(allow_retries=False)`: the step fails at once instead
of going through its retry policy. Everything else stays a plain error the retry policy retries.
"""

from __future__ import annotations

import dagster as dg

from totesys_assets.settings import redact_url, scrub_text, url_secrets

# libpq's words for a refusal that configuration, not time, fixes.
_PERMANENT_DB = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "does not exist",  # database "x" / role "x" does not exist
    "permission denied",
    "no pg_hba.conf entry",
)
# S3 error codes that no retry fixes.
PERMANENT_S3 = frozenset(
    {
        "NoSuchBucket",
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidToken",
        "ExpiredToken",
        "SignatureDoesNotMatch",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
    }
)
AWS_HINT = (
    "check that the bucket exists and the AWS configuration reaches it: credentials (AWS_PROFILE, "
    "or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), AWS_REGION, and AWS_ENDPOINT_URL_S3 for MinIO or moto"
)


class ConfigurationFailure(dg.Failure):
    """A failure that cannot be transient: the step fails at once, without retries."""

    def __init__(self, message: str) -> None:
        super().__init__(description=message, allow_retries=False)

    def __str__(self) -> str:
        return self.description or ""


def is_permanent_db_error(reason: str) -> bool:
    return any(words in reason.lower() for words in _PERMANENT_DB)


def connection_error(
    what: str,
    setting: str,
    url: str,
    exc: BaseException,
    transient: type[Exception],
    permanent: type[Exception],
) -> Exception:
    """The error for a failed connection: names the URL (no password) and the setting to fix."""
    reason = scrub_text(str(exc).strip(), url_secrets(url))
    message = f"cannot connect to {what} at {redact_url(url)}: {reason}"
    if is_permanent_db_error(reason):
        return permanent(f"{message} (check {setting}: user, password and database name)")
    return transient(message)
