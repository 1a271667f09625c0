"""What the dashboard reads and computes: the star schema in, Polars frames out, no Streamlit.

Reading. The dashboard holds the **current state** of the three facts (one row per order or payment,
as the `*_current` views give it) in memory and keeps it live cheaply:

* the first refresh reads each `*_current` view once (×100: ~1.1M sales, 0.5M purchases, 1.6M
  payments, ~2 s each); a view is a DISTINCT ON over the whole fact, 0.9-1.6 s per query at ×100,
  so answering each chart with its own SQL would cost seconds per page;
* every later refresh finds the versions appended since (`*_record_id > $1`, an index range scan:
  facts are append-only and their record ids only grow) and reads the view's current rows for just
  those ids (the view's own rule decides which version is current). When a fact's write counter
  (`pg_stat_user_tables`) and highest record id have not moved, nothing is read at all; when they
  have, the fact's versions are counted, and if the count is not the old count plus the new
  versions (a version committed below the highest record id, a rebuilt warehouse) the fact is read
  again in full;
* the small dimensions are read again on every refresh, in the same REPEATABLE READ snapshot.

Every number on the pages then comes from a pure function of a `Snapshot` and the `Filters`
below, in Polars (milliseconds). Filter values never become SQL: they are applied in Polars, and
the only user input that reaches SQL (the History page's order id) is a bound parameter.

The session is read-only (`default_transaction_read_only` in the connection's startup options)
with a statement timeout, and errors name the warehouse without its password.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, cast

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import polars as pl
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from totesys_assets.settings import ENV_WAREHOUSE_URL, env_float, env_or_none, redact_url

ENV_REFRESH_S = "TOTESYS_DASHBOARD_REFRESH_S"
DEFAULT_REFRESH_S = 10.0
# The pipeline's promise (README, freshness policies): the warehouse is at most 30 minutes behind.
FRESHNESS_PROMISE = timedelta(minutes=30)
STATEMENT_TIMEOUT = "60s"
APPLICATION_NAME = "totesys_dashboard"
OVERDUE_ROWS = 1000  # rows of the overdue table sent to the browser (the count covers all of them)

SALES, PURCHASES, PAYMENTS = "sales", "purchases", "payments"
KINDS = (SALES, PURCHASES, PAYMENTS)


# ---------------------------------------------------------------------------------------------
# Configuration and connections
# ---------------------------------------------------------------------------------------------


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


def _connection_lost(exc: BaseException, state: str) -> bool:
    """Class 08 (connection exception), 57P0x (server shutting down), or libpq's own I/O errors."""
    if state.startswith("08") or state.startswith("57P0"):
        return True
    text = str(exc).lower()
    return not state and any(
        s in text for s in ("server closed the connection", "connection", "no connection", "terminat")
    )


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    if state:
        return str(state)
    match = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(exc))
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------
# The SQL (static text; the one user value, an order id, is bound as $1)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FactSource:
    """How one fact is read: its current view, its history table and the columns the pages use."""

    kind: str
    table: str
    view: str
    natural_id: str
    record_id: str
    date_column: str  # the business date the date filter and the months use
    snapshot_sql: str  # the current state (the *_current view)
    tail_sql: str  # the ids of the versions appended after record id $1
    rows_sql: str  # the current rows of the ids in $1 (comma-separated), from the view
    max_sql: str  # the highest record id (the primary key's index)
    count_sql: str  # versions (rows), read only when something was written
    load_time_sql: str  # commit time of the newest record (track_commit_timestamp = on only)


def _fact_source(
    kind: str, table: str, natural_id: str, record_id: str, date_column: str, columns: str
) -> FactSource:
    view = f"{table}_current"
    # The SQL is assembled from this module's constant identifiers only (noqa/nosec below).
    return FactSource(
        kind=kind,
        table=table,
        view=view,
        natural_id=natural_id,
        record_id=record_id,
        date_column=date_column,
        snapshot_sql=f"SELECT {columns} FROM {view}",  # noqa: S608  # nosec B608
        tail_sql=f"SELECT {natural_id} AS id FROM {table} WHERE {record_id} > $1",  # noqa: S608  # nosec B608
        rows_sql=(
            f"SELECT {columns} FROM {view} "  # noqa: S608  # nosec B608
            f"WHERE {natural_id} = ANY(string_to_array($1, ',')::integer[])"
        ),
        max_sql=f"SELECT max({record_id}) AS max_record_id FROM {table}",  # noqa: S608  # nosec B608
        count_sql=f"SELECT count(*) AS versions FROM {table}",  # noqa: S608  # nosec B608
        load_time_sql=(
            f"SELECT pg_xact_commit_timestamp(xmin) AS loaded_at FROM {table} "  # noqa: S608  # nosec B608
            f"ORDER BY {record_id} DESC LIMIT 1"
        ),
    )


# Money travels as exact integer cents (numeric * 100 -> bigint); quantities as bigint so sums
# over millions of orders cannot overflow; `last_updated` is the version time as one timestamp.
FACT_SOURCES: dict[str, FactSource] = {
    SALES: _fact_source(
        SALES,
        "fact_sales_order",
        "sales_order_id",
        "sales_record_id",
        "created_date",
        "sales_record_id AS record_id, sales_order_id, created_date, "
        "date_trunc('month', created_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, sales_staff_id AS staff_id, "
        "counterparty_id, currency_id, design_id, agreed_delivery_location_id AS location_id, "
        "units_sold::bigint AS units, (units_sold * unit_price * 100)::bigint AS amount_cents",
    ),
    PURCHASES: _fact_source(
        PURCHASES,
        "fact_purchase_order",
        "purchase_order_id",
        "purchase_record_id",
        "created_date",
        "purchase_record_id AS record_id, purchase_order_id, created_date, "
        "date_trunc('month', created_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, staff_id, counterparty_id, currency_id, "
        "agreed_delivery_location_id AS location_id, item_quantity::bigint AS units, "
        "(item_quantity * item_unit_price * 100)::bigint AS amount_cents",
    ),
    PAYMENTS: _fact_source(
        PAYMENTS,
        "fact_payment",
        "payment_id",
        "payment_record_id",
        "payment_date",
        "payment_record_id AS record_id, payment_id, payment_date, "
        "date_trunc('month', payment_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, transaction_id, counterparty_id, "
        "currency_id, payment_type_id, paid, (payment_amount * 100)::bigint AS amount_cents",
    ),
}

DIMENSION_SQL: dict[str, str] = {
    "currency": "SELECT currency_id, currency_code, currency_name FROM dim_currency",
    "counterparty": (
        "SELECT counterparty_id, counterparty_legal_name, counterparty_legal_country FROM dim_counterparty"
    ),
    "design": "SELECT design_id, design_name FROM dim_design",
    "location": "SELECT location_id, city, country FROM dim_location",
    "staff": (
        "SELECT staff_id, first_name || ' ' || last_name AS staff_name, department_name FROM dim_staff"
    ),
    "payment_type": "SELECT payment_type_id, payment_type_name FROM dim_payment_type",
}

# Rows written to each fact since the statistics were reset (PostgreSQL's cumulative statistics,
# flushed by a writing backend within about a second of its commit). Read before the snapshot.
WRITES_SQL = (
    "SELECT c.relname::text AS table_name, s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS writes, "
    "current_setting('track_counts') = 'on' AS tracked FROM pg_class c "
    "JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE c.oid IN (to_regclass('fact_sales_order'), to_regclass('fact_purchase_order'), to_regclass('fact_payment'))"
)
COMMIT_TIMESTAMPS_SQL = "SELECT current_setting('track_commit_timestamp') = 'on' AS enabled"

# The History page: every version of one order or payment (bound $1), with the dimension names.
HISTORY_SQL: dict[str, str] = {
    SALES: (
        "SELECT f.sales_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.units_sold, f.unit_price::text AS unit_price, c.currency_code, "
        "d.design_name, s.first_name || ' ' || s.last_name AS sales_staff, cp.counterparty_legal_name "
        "AS counterparty, f.agreed_delivery_date, f.agreed_payment_date, l.city || ', ' || l.country "
        "AS delivery_location "
        "FROM fact_sales_order f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_design d ON d.design_id = f.design_id "
        "LEFT JOIN dim_staff s ON s.staff_id = f.sales_staff_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "LEFT JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "WHERE f.sales_order_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.sales_record_id"
    ),
    PURCHASES: (
        "SELECT f.purchase_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.item_code, f.item_quantity, f.item_unit_price::text AS item_unit_price, "
        "c.currency_code, s.first_name || ' ' || s.last_name AS staff, cp.counterparty_legal_name "
        "AS supplier, f.agreed_delivery_date, f.agreed_payment_date, l.city || ', ' || l.country "
        "AS delivery_location "
        "FROM fact_purchase_order f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_staff s ON s.staff_id = f.staff_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "LEFT JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "WHERE f.purchase_order_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.purchase_record_id"
    ),
    PAYMENTS: (
        "SELECT f.payment_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.payment_amount::text AS payment_amount, c.currency_code, "
        "t.payment_type_name AS payment_type, f.paid, f.payment_date, f.transaction_id, "
        "cp.counterparty_legal_name AS counterparty "
        "FROM fact_payment f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_payment_type t ON t.payment_type_id = f.payment_type_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "WHERE f.payment_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.payment_record_id"
    ),
}
HISTORY_MONEY = ("unit_price", "item_unit_price", "payment_amount")
HISTORY_MEASURE = {SALES: "units_sold", PURCHASES: "item_quantity", PAYMENTS: "payment_amount"}
HISTORY_ID_LABEL = {SALES: "sales order id", PURCHASES: "purchase order id", PAYMENTS: "payment id"}

# Orders (or payments) with more than one version among the newest `$1` versions loaded: the pk
# index finds the newest versions, the version key each id's other versions.
RECENT_CHANGES_SQL: dict[str, str] = {
    kind: (
        f"WITH recent AS (SELECT DISTINCT {s.natural_id} AS id FROM (SELECT {s.natural_id} FROM {s.table} "  # noqa: S608  # nosec B608
        f"ORDER BY {s.record_id} DESC LIMIT $1) newest) "
        f"SELECT f.{s.natural_id} AS id, count(*) AS versions, "
        f"max(f.last_updated_date + f.last_updated_time) AS last_updated "
        f"FROM {s.table} f JOIN recent ON recent.id = f.{s.natural_id} "
        f"GROUP BY f.{s.natural_id} HAVING count(*) > 1 ORDER BY last_updated DESC, id DESC LIMIT 25"
    )
    for kind, s in FACT_SOURCES.items()
}
RECENT_VERSIONS_SCANNED = 2000


# ---------------------------------------------------------------------------------------------
# The live current state
# ---------------------------------------------------------------------------------------------


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


class _Memo:
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
    memo: _Memo = field(default_factory=lambda: _Memo(), compare=False, repr=False)

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
                state = _sqlstate(exc) or ""
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
                if not _connection_lost(exc, state):
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
            memo=previous.memo if unchanged else _Memo(),  # type: ignore[union-attr]
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


# ---------------------------------------------------------------------------------------------
# Filters and the numbers behind every chart (pure functions of a Snapshot)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The sidebar's filters. Empty means "all". Dates are inclusive.

    Sales and purchases are dated by the order's date (`created_date`), payments by `payment_date`.
    `countries` (delivery country) applies to sales and purchases; payments have no location.
    """

    start: date | None = None
    end: date | None = None
    currencies: tuple[str, ...] = ()
    counterparties: tuple[int, ...] = ()
    countries: tuple[str, ...] = ()

    def with_dates(self, start: date | None, end: date | None) -> Filters:
        return replace(self, start=start, end=end)


ALL = Filters()


def _ids(dim: pl.DataFrame, id_col: str, col: str, values: Sequence[Any]) -> pl.Series:
    return dim.filter(pl.col(col).is_in(pl.Series(values, dtype=dim.schema[col]).implode())).get_column(
        id_col
    )


def filtered(snap: Snapshot, kind: str, f: Filters) -> pl.DataFrame:
    """The current rows of one fact that pass the filters."""
    frame = snap.facts[kind]
    day = FACT_SOURCES[kind].date_column
    conditions: list[pl.Expr] = []
    if f.start is not None:
        conditions.append(pl.col(day) >= f.start)
    if f.end is not None:
        conditions.append(pl.col(day) <= f.end)
    if f.currencies:
        ids = _ids(snap.dims["currency"], "currency_id", "currency_code", f.currencies)
        conditions.append(pl.col("currency_id").is_in(ids.implode()))
    if f.counterparties:
        conditions.append(
            pl.col("counterparty_id").is_in(pl.Series(f.counterparties, dtype=pl.Int32).implode())
        )
    if f.countries and kind != PAYMENTS:
        ids = _ids(snap.dims["location"], "location_id", "country", f.countries)
        conditions.append(pl.col("location_id").is_in(ids.implode()))
    return frame.filter(*conditions) if conditions else frame


def _money(cents: str, name: str | None = None) -> pl.Expr:
    """Integer cents -> exact Decimal(38, 2)."""
    return (pl.col(cents).cast(pl.Decimal(38, 2)) / 100).alias(name or cents.removesuffix("_cents"))


def _currency_codes(snap: Snapshot) -> pl.DataFrame:
    return snap.dims["currency"].select("currency_id", "currency_code")


def _per_currency(rows: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """count, units and amount (cents) per key and currency id: integer keys, so it is cheap.

    Every aggregate groups by ids first and joins the (small) dimensions to the result.
    """
    aggs = [pl.len().cast(pl.Int64).alias("orders"), pl.col("units").sum(), pl.col("amount_cents").sum()]
    return rows.group_by([*keys, "currency_id"]).agg(aggs)


@memoized
def by_currency(snap: Snapshot, kind: str, f: Filters) -> pl.DataFrame:
    """Per currency: orders (payments), units (sales, purchases), amount; the headline figures.

    Sales: `amount` is the revenue (units × price); purchases: the spend; payments: `paid` and
    `unpaid` amounts instead.
    """
    rows = filtered(snap, kind, f)
    if kind != PAYMENTS:
        grouped = _per_currency(rows, [])
        return (
            grouped.join(_currency_codes(snap), on="currency_id", how="left")
            .sort("currency_code")
            .select("currency_code", pl.col("orders").alias("count"), "units", _money("amount_cents"))
        )
    grouped = rows.group_by("currency_id").agg(
        pl.len().cast(pl.Int64).alias("count"),
        pl.col("amount_cents").filter(pl.col("paid")).sum().alias("paid_cents"),
        pl.col("amount_cents").filter(~pl.col("paid")).sum().alias("unpaid_cents"),
    )
    return (
        grouped.join(_currency_codes(snap), on="currency_id", how="left")
        .sort("currency_code")
        .select("currency_code", "count", _money("paid_cents"), _money("unpaid_cents"))
    )


@memoized
def by_month(snap: Snapshot, kind: str, f: Filters) -> pl.DataFrame:
    """Sales revenue or purchase spend (units × price) by month of the order date and currency."""
    grouped = _per_currency(filtered(snap, kind, f), ["month"])
    return (
        grouped.join(_currency_codes(snap), on="currency_id", how="left")
        .sort("month", "currency_code")
        .select("month", "currency_code", "orders", "units", _money("amount_cents"))
    )


def _wide(snap: Snapshot, grouped: pl.DataFrame, keys: list[str], top: int | None) -> pl.DataFrame:
    """Per key: orders, units and one `amount <CUR>` column per currency, most units first."""
    codes = _currency_codes(snap).sort("currency_code")
    totals = grouped.group_by(keys).agg(pl.col("orders").sum(), pl.col("units").sum())
    totals = totals.sort(["units", *keys], descending=[True] + [False] * len(keys))
    if top is not None:
        totals = totals.head(top)
    wide = totals
    for currency_id, code in codes.iter_rows():
        part = (
            grouped.filter(pl.col("currency_id") == currency_id)
            .group_by(keys)
            .agg(pl.col("amount_cents").sum())
        )
        wide = wide.join(part.select(*keys, _money("amount_cents", f"amount {code}")), on=keys, how="left")
    return wide.with_columns(pl.col(f"amount {c}").fill_null(0) for c in codes.get_column("currency_code"))


@memoized
def top_designs(snap: Snapshot, f: Filters, top: int | None = 10) -> pl.DataFrame:
    """Sales by design, most units sold first."""
    wide = _wide(snap, _per_currency(filtered(snap, SALES, f), ["design_id"]), ["design_id"], top)
    return _label(wide, snap.dims["design"], "design_id")


@memoized
def top_counterparties(snap: Snapshot, kind: str, f: Filters, top: int | None = 10) -> pl.DataFrame:
    """Sales by customer or purchases by supplier (dim_counterparty), most units first."""
    keys = ["counterparty_id"]
    wide = _wide(snap, _per_currency(filtered(snap, kind, f), keys), keys, top)
    return _label(
        wide, snap.dims["counterparty"].select("counterparty_id", "counterparty_legal_name"), keys[0]
    )


@memoized
def by_location(snap: Snapshot, kind: str, f: Filters) -> pl.DataFrame:
    """By delivery country and city (dim_location), most units first."""
    grouped = _per_currency(filtered(snap, kind, f), ["location_id"]).join(
        snap.dims["location"].select("location_id", "country", "city"), on="location_id", how="left"
    )
    return _wide(snap, grouped, ["country", "city"], None)


@memoized
def by_staff(snap: Snapshot, kind: str, f: Filters) -> pl.DataFrame:
    """By staff member (the sales staff for sales) with their department, most units first."""
    wide = _wide(snap, _per_currency(filtered(snap, kind, f), ["staff_id"]), ["staff_id"], None)
    return _label(wide, snap.dims["staff"], "staff_id")


def _label(wide: pl.DataFrame, labels: pl.DataFrame, key: str) -> pl.DataFrame:
    """The dimension's label columns right after the key (order kept)."""
    names = [c for c in labels.columns if c != key]
    joined = wide.join(labels, on=key, how="left", maintain_order="left")
    rest = [c for c in wide.columns if c != key]
    return joined.select(key, *names, *rest)


@memoized
def payments_by_month(snap: Snapshot, f: Filters) -> pl.DataFrame:
    """Paid and unpaid amounts by month of the payment date, payment type and currency."""
    grouped = (
        filtered(snap, PAYMENTS, f)
        .group_by("month", "payment_type_id", "currency_id", "paid")
        .agg(pl.len().cast(pl.Int64).alias("payments"), pl.col("amount_cents").sum())
    )
    return (
        grouped.join(_currency_codes(snap), on="currency_id", how="left")
        .join(snap.dims["payment_type"], on="payment_type_id", how="left")
        .with_columns(
            pl.when(pl.col("paid")).then(pl.lit("paid")).otherwise(pl.lit("unpaid")).alias("status")
        )
        .sort("month", "payment_type_name", "currency_code", "status")
        .select("month", "payment_type_name", "currency_code", "status", "payments", _money("amount_cents"))
    )


DEFAULT_OVERDUE_SORT = "most overdue first"
OVERDUE_SORTS = {
    "most overdue first": (["payment_date", "payment_id"], [False, False]),
    "largest amount first": (["amount_cents", "payment_id"], [True, False]),
    "newest first": (["payment_date", "payment_id"], [True, True]),
}


def overdue(snap: Snapshot, f: Filters, today: date | None = None) -> pl.DataFrame:
    """Payments whose payment date has passed and that are not paid (current state), all of them."""
    today = today or utc_now().date()
    return filtered(snap, PAYMENTS, f).filter(~pl.col("paid"), pl.col("payment_date") < today)


@memoized
@memoized
def overdue_count(snap: Snapshot, f: Filters, today: date | None = None) -> int:
    return overdue(snap, f, today or utc_now().date()).height


@memoized
def overdue_table(
    snap: Snapshot,
    f: Filters,
    today: date | None = None,
    sort: str = DEFAULT_OVERDUE_SORT,
    limit: int = OVERDUE_ROWS,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the first `limit` overdue payments in `sort` order, count and amount per currency of all of them)."""
    today = today or utc_now().date()
    rows = overdue(snap, f, today)
    by, descending = OVERDUE_SORTS[sort]
    table = (
        rows.sort(by, descending=descending)
        .head(limit)
        .join(_currency_codes(snap), on="currency_id", how="left", maintain_order="left")
        .join(snap.dims["payment_type"], on="payment_type_id", how="left", maintain_order="left")
        .join(
            snap.dims["counterparty"].select("counterparty_id", "counterparty_legal_name"),
            on="counterparty_id", how="left", maintain_order="left",
        )
        .with_columns((pl.lit(today) - pl.col("payment_date")).dt.total_days().cast(pl.Int64).alias("days_overdue"))
        .select(
            "payment_id", "payment_date", "days_overdue", "payment_type_name", "counterparty_legal_name",
            "currency_code", _money("amount_cents", "amount"), "transaction_id",
        )
    )  # fmt: skip
    totals = (
        rows.group_by("currency_id")
        .agg(pl.len().cast(pl.Int64).alias("payments"), pl.col("amount_cents").sum())
        .join(_currency_codes(snap), on="currency_id", how="left")
        .sort("currency_code")
        .select("currency_code", "payments", _money("amount_cents", "amount"))
    )
    return table, totals


def date_bounds(snap: Snapshot) -> tuple[date | None, date | None]:
    """The first and last business date in the facts (for the date filter's hints)."""
    lows: list[date] = []
    highs: list[date] = []
    for kind in KINDS:
        column = snap.facts[kind].get_column(FACT_SOURCES[kind].date_column)
        if column.len():
            lows.append(cast(date, column.min()))
            highs.append(cast(date, column.max()))
    return (min(lows) if lows else None, max(highs) if highs else None)
