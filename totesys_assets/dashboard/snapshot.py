"""What the pages compute from: an immutable snapshot of the current facts and dimensions, its
freshness, and the memo of numbers already computed from its data."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

# The pipeline's promise (README, freshness policies): the warehouse is at most 30 minutes behind.
FRESHNESS_PROMISE = timedelta(minutes=30)


@dataclass(frozen=True)
class FactState:
    """One fact's current rows and what the warehouse held when they were read."""

    current: pl.DataFrame
    versions: int  # rows (versions) in the fact table
    max_record_id: int
    writes: int | None = None  # the table's write counter when these rows were read (None: unknown)
    last_arrival: datetime | None = None  # when a refresh last found new versions (UTC, naive)


@dataclass(frozen=True)
class Freshness:
    newest_version: datetime | None  # newest last_updated in the facts (UTC, naive)
    newest_by_fact: dict[str, datetime | None]
    loaded_at: datetime | None  # commit time of the newest fact row, when PostgreSQL records it
    commit_timestamps: bool  # track_commit_timestamp is on
    last_arrival: datetime | None  # when this dashboard last saw new versions arrive
    checked_at: datetime  # when this snapshot was read

    @property
    def reference_time(self) -> datetime | None:
        """What the 30-minute promise is judged on: the load time if known, else the newest version."""
        return self.loaded_at or self.newest_version

    def age(self, now: datetime | None = None) -> timedelta | None:
        ref = self.reference_time
        if ref is None:
            return None
        return (now or utc_now()) - ref

    def is_stale(self, now: datetime | None = None) -> bool:
        age = self.age(now)
        return age is None or age > FRESHNESS_PROMISE


class Memo:
    """The numbers already computed from one snapshot's data (least recently used dropped first)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()  # outside the lock: pages of other sessions are not held up
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def memoized(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Cache a pure function of (snapshot, hashable arguments) on the snapshot's data.

    A refresh that finds nothing new keeps the memo, so a page left open recomputes nothing until
    the warehouse changes. The cached frames are shared between sessions and must not be mutated.
    """

    @functools.wraps(fn)
    def wrapper(snap: Snapshot, *args: Any, **kwargs: Any) -> Any:
        key = (fn.__name__, args, tuple(sorted(kwargs.items())))
        return snap.memo.get(key, lambda: fn(snap, *args, **kwargs))

    return wrapper


@dataclass(frozen=True)
class Snapshot:
    """Everything the pages compute from: current facts, dimensions, freshness (immutable)."""

    url: str  # for display only: the password is masked
    facts: dict[str, pl.DataFrame]
    versions: dict[str, int]
    dims: dict[str, pl.DataFrame]
    freshness: Freshness
    memo: Memo = field(default_factory=lambda: Memo(), compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        return all(frame.height == 0 for frame in self.facts.values())

    @property
    def options_key(self) -> tuple:
        """Changes when a filter's choices change (a new currency, counterparty or country)."""
        return (
            tuple(self.dims["currency"]["currency_code"].sort()),
            self.dims["counterparty"].height,
            tuple(self.dims["location"]["country"].unique().sort()),
        )


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
