"""Simulated time: millisecond epoch integers, the business calendar and the payment run.

Everything the generator computes is an int64 count of milliseconds since 1970-01-01 (naive UTC,
as the source stores `timestamp(3) without time zone`), so whole histories stay numpy arrays.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
EPOCH = datetime(1970, 1, 1)

# Orders and designs arrive Mon–Fri between 08:00 and 18:59, in batches ~15 minutes apart.
OPEN_MS = 8 * HOUR_MS
SLOT_MS = 15 * MINUTE_MS
SLOTS_PER_DAY = 44  # 08:00 … 18:45, the last batch lands before 19:00
# The real source stamps each batch at ~:09.7–:10.4 seconds past the minute.
BATCH_SECOND_MS = (9_700, 10_450)
# The payment run flips due payments at 07:55:11.xxx on weekdays (one timestamp per day).
PAYMENT_RUN_MS = 7 * HOUR_MS + 55 * MINUTE_MS + 11_000

DEFAULT_START = datetime(2022, 11, 3, 14, 20, 49, 962000)
STAFF_SEED_DELAY_MS = 1_601  # counterparty and staff rows follow the first seed by 1.6 s


def utc_now() -> datetime:
    """Now as naive UTC, truncated to milliseconds (the source's precision)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def naive_utc(value: datetime) -> datetime:
    """Aware datetimes are converted to naive UTC; naive ones are taken as UTC already."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def to_ms(value: datetime) -> int:
    delta = naive_utc(value) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=int(ms))


def weekday(day: np.ndarray | int) -> np.ndarray | int:
    """Monday=0 … Sunday=6 for epoch-day numbers (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a stateless, vectorised hash for per-day constants."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def payment_run_ms(seed: int, day: np.ndarray) -> np.ndarray:
    """When the payment run of each epoch day happens: 07:55:11.100–.999, fixed per (seed, day).

    A pure function of the day, so a payment due in the future gets the same flip time whether
    it is computed during `seed_history` or a later `advance`.
    """
    day = np.asarray(day, dtype=np.int64)
    key = np.uint64(seed & 0xFFFFFFFF) * np.uint64(1_000_003) + day.astype(np.uint64)
    jitter = (_mix64(key) % np.uint64(900)).astype(np.int64) + 100
    return day * DAY_MS + PAYMENT_RUN_MS + jitter
