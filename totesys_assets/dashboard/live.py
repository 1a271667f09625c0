"""The dashboard's live read-only view of one warehouse: the current state of the three facts,
read in full once and then refreshed from the versions appended since.

A refresh reads a fact again only when its write counter or highest record id moved; if its
versions then do not add up (a version committed below the highest record id, a rebuilt
warehouse) it reads the fact's current view in full. The dimensions are read on every refresh, in
the same REPEATABLE READ snapshot.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import polars as pl

from totesys_assets.dashboard.connection import (
    DashboardError,
    WarehouseNotLoaded,
    WarehouseUnreachable,
    connection_lost,
    display_url,
    read_only_conninfo,
    safe_text,
    sqlstate,
)
from totesys_assets.dashboard.snapshot import FactState, Freshness, Memo, Snapshot, utc_now
from totesys_assets.dashboard.warehouse_sql import (
    COMMIT_TIMESTAMPS_SQL,
    DIMENSION_SQL,
    FACT_SOURCES,
    HISTORY_MONEY,
    HISTORY_SQL,
    KINDS,
    RECENT_CHANGES_SQL,
    RECENT_VERSIONS_SCANNED,
    WRITES_SQL,
    FactSource,
)


def _replace_ids(current: pl.DataFrame, ids: pl.Series, rows: pl.DataFrame, natural_id: str) -> pl.DataFrame:
    """`current` with the rows of `ids` replaced by `rows` (the view's current rows for those ids).

    The view decides which version is current (and whether an id has one), so the dashboard never
    re-implements its rule.
    """
    kept = current.filter(~pl.col(natural_id).is_in(ids.implode()))
    return pl.concat([kept, rows.select(current.columns)], rechunk=False) if rows.height else kept


class LiveWarehouse:
    """The dashboard's read-only view of one warehouse, refreshed incrementally (thread-safe).

    One instance per warehouse URL serves every browser session (`shared_warehouse`).
    """

    instances: ClassVar[weakref.WeakSet[LiveWarehouse]] = weakref.WeakSet()

    def __init__(self, url: str) -> None:
        LiveWarehouse.instances.add(self)
        self.url = url
        self.display_url = display_url(url)
        self._conninfo = read_only_conninfo(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._facts: dict[str, FactState] = {}
        self._snapshot: Snapshot | None = None
        self._taken = -1e9  # time.monotonic() of the last refresh
        self.full_reads = 0  # how many times a fact was read in full (tests, bench)

    # -- connection ----------------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            try:
                self._conn = adbc.connect(self._conninfo, autocommit=True)
            except adbc_driver_manager.Error as exc:
                raise WarehouseUnreachable(
                    f"Cannot reach the warehouse at {self.display_url}: "
                    f"{safe_text(str(exc).strip(), self.url)}"
                ) from None
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except adbc_driver_manager.Error:
                    pass
                self._conn = None

    def _run(self, work: Any) -> Any:
        """`work(cursor)` on the session; a lost connection is reopened once; known states explained."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    return work(cur)
            except adbc_driver_manager.Error as exc:
                state = sqlstate(exc) or ""
                first_line = safe_text(str(exc).strip().splitlines()[0], self.url)
                if state == "42P01":  # undefined table: the pipeline has not created the star schema
                    missing = re.search(r'relation "([^"]+)"', first_line)
                    raise WarehouseNotLoaded(
                        f"The warehouse at {self.display_url} has no star schema yet"
                        + (f" (no table {missing.group(1)})." if missing else ".")
                    ) from None
                if state == "42703":  # undefined column: a warehouse of another schema version
                    raise DashboardError(
                        f"The warehouse at {self.display_url} does not have the star schema's columns "
                        f"({first_line})."
                    ) from None
                self.close()
                if not connection_lost(exc, state):
                    raise
                if attempt == 2:
                    raise WarehouseUnreachable(
                        f"Lost the connection to the warehouse at {self.display_url}: {first_line}"
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _frame(cur: Any, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        cur.execute(query, params)
        frame = pl.from_arrow(cur.fetch_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        return frame

    # -- refresh -------------------------------------------------------------------------------

    def snapshot(self, max_age_s: float = 2.0) -> Snapshot:
        """The current state, refreshed when the last one is older than `max_age_s` seconds."""
        with self._lock:
            if self._snapshot is not None and time.monotonic() - self._taken < max_age_s:
                return self._snapshot
            self._snapshot = self._run(self._refresh)
            self._taken = time.monotonic()
            return self._snapshot

    def expire(self, *, changed: bool = False) -> None:
        """The next `snapshot()` refreshes, however young the last one is (the bench, tests).

        `changed`: as if every fact had been written to since: the refresh counts each fact's
        versions, and every number is computed afresh (the memo is dropped).
        """
        with self._lock:
            self._taken = -1e9
            if changed:
                self._facts = {kind: replace(state, writes=None) for kind, state in self._facts.items()}
                self._snapshot = None

    def _refresh(self, cur: Any) -> Snapshot:
        # The write counters come first, outside the snapshot: a commit they count is then visible
        # in the snapshot below, and one they miss raises them for the next refresh.
        writes = {
            row["table_name"]: (int(row["writes"]) if row["tracked"] else None)
            for row in self._frame(cur, WRITES_SQL).iter_rows(named=True)
        }
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            states = {
                kind: self._refresh_fact(cur, FACT_SOURCES[kind], writes.get(FACT_SOURCES[kind].table))
                for kind in KINDS
            }
            dims = {name: self._frame(cur, query) for name, query in DIMENSION_SQL.items()}
            commit_ts = bool(self._frame(cur, COMMIT_TIMESTAMPS_SQL).item())
            loaded = []
            if commit_ts:
                for kind in KINDS:
                    rows = self._frame(cur, FACT_SOURCES[kind].load_time_sql)
                    if rows.height and rows.item() is not None:
                        loaded.append(rows.item())
        except BaseException:
            with contextlib.suppress(adbc_driver_manager.Error):
                cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
        previous, self._facts = self._snapshot, states
        newest: dict[str, datetime | None] = {
            kind: (cast(datetime, s.current.get_column("last_updated").max()) if s.current.height else None)
            for kind, s in states.items()
        }
        present = [t for t in newest.values() if t is not None]
        arrivals = [s.last_arrival for s in states.values() if s.last_arrival is not None]
        loaded_at = max(loaded) if loaded else None
        if loaded_at is not None and loaded_at.tzinfo is not None:
            loaded_at = loaded_at.astimezone(UTC).replace(tzinfo=None)
        freshness = Freshness(
            newest_version=cast(datetime, max(present)) if present else None,
            newest_by_fact=newest,
            loaded_at=loaded_at,
            commit_timestamps=commit_ts,
            last_arrival=max(arrivals) if arrivals else None,
            checked_at=utc_now(),
        )
        facts = {kind: s.current for kind, s in states.items()}
        unchanged = (
            previous is not None
            and all(facts[k] is previous.facts[k] for k in KINDS)
            and all(dims[n].equals(previous.dims[n]) for n in DIMENSION_SQL)
        )
        return Snapshot(
            url=self.display_url,
            facts=previous.facts if unchanged else facts,  # type: ignore[union-attr]
            versions={kind: s.versions for kind, s in states.items()},
            dims=previous.dims if unchanged else dims,  # type: ignore[union-attr]
            freshness=freshness,
            # The same data: the numbers computed from the last snapshot still hold.
            memo=previous.memo if unchanged else Memo(),  # type: ignore[union-attr]
        )

    def _refresh_fact(self, cur: Any, source: FactSource, writes: int | None) -> FactState:
        max_id = int(self._frame(cur, source.max_sql).item() or 0)
        old = self._facts.get(source.kind)
        if old is not None and writes is not None and writes == old.writes and max_id == old.max_record_id:
            return old  # nothing written since, and the same newest record: unchanged, no count needed
        versions = int(self._frame(cur, source.count_sql).item())
        if old is not None and versions == old.versions and max_id == old.max_record_id:
            return replace(old, writes=writes)  # written and rolled back, or not yet visible
        if old is not None and versions > old.versions and max_id > old.max_record_id:
            tail = self._frame(cur, source.tail_sql, (old.max_record_id,))
            if old.versions + tail.height == versions:
                ids = tail.get_column("id").unique().sort()
                rows = self._frame(cur, source.rows_sql, (",".join(map(str, ids.to_list())),))
                current = _replace_ids(old.current, ids, rows, source.natural_id)
                if current.n_chunks() > 16:
                    current = current.rechunk()
                return FactState(current, versions, max_id, writes, last_arrival=utc_now())
        # First read, or the fact changed in a way a tail cannot explain (a version committed below
        # the highest record id, a rebuilt table): read the current view again.
        self.full_reads += 1
        current = self._frame(cur, source.snapshot_sql)
        arrival = utc_now() if old is not None else None
        return FactState(current, versions, max_id, writes, last_arrival=arrival)

    # -- the History page ----------------------------------------------------------------------

    def history(self, kind: str, order_id: int) -> pl.DataFrame:
        """Every version of one order or payment, oldest first, with what changed (see `describe_changes`)."""
        query = HISTORY_SQL[kind]
        with self._lock:
            frame = self._run(lambda cur: self._frame(cur, query, (int(order_id),)))
        # numeric travels as text (ADBC has no Arrow type for it): exact decimals again
        money = [c for c in HISTORY_MONEY if c in frame.columns]
        return describe_changes(frame.with_columns(pl.col(c).cast(pl.Decimal(10, 2)) for c in money))

    def recent_changes(self, kind: str) -> pl.DataFrame:
        """Ids with more than one version among the newest versions loaded (newest first)."""
        query = RECENT_CHANGES_SQL[kind]
        with self._lock:
            return self._run(lambda cur: self._frame(cur, query, (RECENT_VERSIONS_SCANNED,)))

    def execute(self, statement: str) -> None:
        """Run a statement on the dashboard's session (tests prove it is read-only)."""
        with self._lock:
            self._run(lambda cur: cur.execute(statement))


_shared: dict[str, LiveWarehouse] = {}
_shared_lock = threading.Lock()


def shared_warehouse(url: str) -> LiveWarehouse:
    """The process's one LiveWarehouse for `url`: every session (and the CLI's warm-up) shares it."""
    with _shared_lock:
        live = _shared.get(url)
        if live is None:
            live = _shared[url] = LiveWarehouse(url)
        return live


def close_all() -> None:
    """Close every live warehouse's session (tests; the sessions otherwise live with the process)."""
    for live in list(LiveWarehouse.instances):
        live.close()


def describe_changes(versions: pl.DataFrame) -> pl.DataFrame:
    """Adds `version` (1…n) and `changes` ("column: old → new; …" against the previous version)."""
    if versions.height == 0:
        return versions.with_columns(
            pl.lit(None, dtype=pl.Int64).alias("version"), pl.lit(None, dtype=pl.String).alias("changes")
        ).select("version", *versions.columns, "changes")
    compared = [c for c in versions.columns if c not in ("record_id", "last_updated")]
    rows = versions.rows(named=True)
    changes: list[str] = ["first version"]
    for before, after in zip(rows, rows[1:], strict=False):
        diffs = [f"{c}: {before[c]} → {after[c]}" for c in compared if before[c] != after[c]]
        changes.append("; ".join(diffs) if diffs else "no change in these columns")
    return versions.with_columns(
        pl.int_range(1, versions.height + 1, dtype=pl.Int64).alias("version"),
        pl.Series("changes", changes, dtype=pl.String),
    ).select("version", *versions.columns, "changes")
