"""The warehouse resource: PostgreSQL holding the three star schemas. It owns its DDL and loads
each frame in one transaction, so a failed load leaves the table exactly as it was.

Dimensions upsert on the primary key and rewrite a row only when a value changed; facts append one
row per new version of a source row (id, last_updated_date, last_updated_time, version_hash) and
skip versions already loaded, so reloading is a no-op and a version's serial record id never changes.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import adbc_driver_manager
import dagster as dg
import polars as pl
import psycopg
from psycopg import sql
from pydantic import Field

from totesys_assets.resources.errors import connection_error
from totesys_assets.resources.warehouse import quarantine
from totesys_assets.resources.warehouse.errors import (
    WarehouseAccessError,
    WarehouseConnectionError,
    connect_adbc,
)
from totesys_assets.resources.warehouse.first_load import first_load
from totesys_assets.resources.warehouse.frames import FrameChunks
from totesys_assets.resources.warehouse.result import LoadResult
from totesys_assets.resources.warehouse.schema import (
    CURRENT_VIEWS,
    DDL_LOCK_KEY,
    check_schema,
    warehouse_statements,
)
from totesys_assets.resources.warehouse.staged import load_staged
from totesys_assets.settings import ENV_WAREHOUSE_URL
from totesys_assets.specs import WAREHOUSE_TABLES, Kind, TableSpec

_T = TypeVar("_T")

# Process-wide: warehouse URLs whose schema this process has already ensured.
_schema_ready: set[str] = set()
_schema_lock = threading.Lock()


class WarehouseResource(dg.ConfigurableResource):
    """The PostgreSQL data warehouse: owns its DDL and loads dimensions and facts in bulk."""

    url: str | None = Field(
        default=None,
        description=(
            "PostgreSQL URL of the warehouse (WAREHOUSE_DB_URL); unset = the embedded demo warehouse."
        ),
    )
    bulk_load_min_rows: int = Field(
        default=50_000,
        description=(
            "Fact loads of at least this many rows (and at least a tenth of the table) validate "
            "foreign keys set-based: the keys are dropped and re-added inside the load's transaction."
        ),
    )

    # -- connections -------------------------------------------------------------------------

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        from totesys_assets import embedded

        return embedded.warehouse_url()

    @contextlib.contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A psycopg connection (not autocommit); the caller commits."""
        url = self.resolved_url()
        try:
            conn = psycopg.connect(url, connect_timeout=10, application_name="totesys_assets.warehouse")
        except psycopg.Error as exc:
            raise connection_error(
                "the warehouse", ENV_WAREHOUSE_URL, url, exc, WarehouseConnectionError, WarehouseAccessError
            ) from None
        with conn:
            yield conn

    # -- DDL -----------------------------------------------------------------------------------

    def ensure_schema(self, *, force: bool = False) -> None:
        """Create the 11 tables and the `*_current` views if missing, then check they match the specs.

        Idempotent and safe to run from several processes at once (advisory transaction lock).
        Once per process and URL unless `force`.
        """
        url = self.resolved_url()
        with _schema_lock:
            if url in _schema_ready and not force:
                return
            with self.connect() as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK_KEY,))
                    for statement in warehouse_statements():
                        conn.execute(statement)
                    check_schema(conn)
            _schema_ready.add(url)

    # -- loads ---------------------------------------------------------------------------------

    def upsert_dimension(
        self,
        table: str,
        frames: pl.DataFrame | Iterable[pl.DataFrame],
        *,
        _before_commit: Callable[[psycopg.Connection], None] | None = None,
    ) -> LoadResult:
        """Insert new rows and update changed ones (by primary key); unchanged rows are not rewritten.

        `frames` is one frame or chunks of one holding disjoint keys (read one at a time); either
        way it is one transaction.
        """
        spec = self._spec(table, fact=False)
        return self._load(spec, frames, _before_commit)

    def append_facts(
        self,
        table: str,
        frames: pl.DataFrame | Iterable[pl.DataFrame],
        *,
        _before_commit: Callable[[psycopg.Connection], None] | None = None,
    ) -> LoadResult:
        """Append one row per version not loaded yet (natural key); loaded versions are skipped.

        `frames` is one frame or chunks of one (oldest days first, read one at a time, so a long
        range is loaded in bounded memory); either way it is one transaction.
        """
        spec = self._spec(table, fact=True)
        return self._load(spec, frames, _before_commit)

    def _load(
        self,
        spec: TableSpec,
        frames: pl.DataFrame | Iterable[pl.DataFrame],
        before_commit: Callable[[psycopg.Connection], None] | None,
    ) -> LoadResult:
        """One load in one transaction. `before_commit` is the test-only fault hook (see tests)."""
        started = time.perf_counter()
        chunks = FrameChunks(spec, frames)
        # A bad first chunk fails before any connection is opened; the first load needs the size.
        chunks.peek(self.bulk_load_min_rows)
        return self._with_schema(
            lambda: self._load_chunks(spec, chunks, before_commit, started), retry=lambda: not chunks.started
        )

    def _load_chunks(
        self,
        spec: TableSpec,
        chunks: FrameChunks,
        before_commit: Callable[[psycopg.Connection], None] | None,
        started: float,
    ) -> LoadResult:
        # (the test-only fault hook takes a psycopg connection, so it always runs the staged path)
        if before_commit is None and chunks.rows >= self.bulk_load_min_rows:
            loaded = first_load(self.resolved_url(), spec, chunks, started)
            if loaded is not None:
                return loaded
        with self.connect() as conn:
            return load_staged(
                conn,
                spec,
                chunks,
                bulk_load_min_rows=self.bulk_load_min_rows,
                before_commit=before_commit,
                started=started,
            )

    # -- quarantine ----------------------------------------------------------------------------

    def dimension_keys(self, table: str) -> dict[str, pl.Series]:
        """For each foreign key of a fact: the keys its dimension holds (read once per dimension)."""
        spec = self._spec(table, fact=True)
        by_dimension: dict[tuple[str, str], list[str]] = {}
        for column in spec.foreign_keys:
            ref_table, ref_column = column.references.split(".")  # type: ignore[union-attr]
            by_dimension.setdefault((ref_table, ref_column), []).append(column.name)
        out: dict[str, pl.Series] = {}
        for (ref_table, ref_column), columns in by_dimension.items():
            query = sql.SQL("SELECT {} FROM {}").format(sql.Identifier(ref_column), sql.Identifier(ref_table))
            keys = pl.from_arrow(self._with_schema(functools.partial(self._fetch_arrow, query.as_string())))
            assert isinstance(keys, pl.DataFrame)
            for name in columns:
                out[name] = keys.to_series().cast(spec.column(name).dtype)
        return out

    def record_rejections(self, table: str, rejected: pl.DataFrame) -> int:
        """Store the source versions a load of `table` set aside (`transforms.REJECTED_SCHEMA`), one
        row per offending value; a version seen again updates its row. Returns the rows stored."""
        spec = self._spec(table, fact=True)
        if rejected.is_empty():
            return 0
        return self._on_connection(lambda conn: quarantine.record_rejections(conn, spec, rejected))

    def record_deletions(self, table: str, deletions: pl.DataFrame) -> int:
        """Store the deletions of a fact's source rows the lake observed (`DELETIONS_SCHEMA`);
        one seen before adds nothing. Returns the rows added."""
        spec = self._spec(table, fact=True)
        if deletions.is_empty():
            return 0
        return self._on_connection(lambda conn: quarantine.record_deletions(conn, spec, deletions))

    def open_rejections(self, table: str, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
        """How many rejected versions of a fact are still open (not superseded by a loaded version
        of the same source row), and the first `limit` rejected values, oldest first."""
        spec = self._spec(table, fact=True)
        return self._on_connection(lambda conn: quarantine.open_rejections(conn, spec, limit))

    def rejected_unloaded_versions(self, table: str, first_day: str, last_day: str) -> int:
        """Rejected versions of a fact with `last_updated` in the days that the fact does not hold."""
        spec = self._spec(table, fact=True)
        query = quarantine.rejected_unloaded_query(spec)
        return int(self.scalar(query, {"fact": spec.name, "first_day": first_day, "last_day": last_day}))

    # -- reads (asset checks, tests) -----------------------------------------------------------

    def read_table(self, table: str) -> pl.DataFrame:
        """A warehouse table (by primary key) or `*_current` view (by natural id), typed by its spec."""
        if table in WAREHOUSE_TABLES:
            spec = WAREHOUSE_TABLES[table]
            order = spec.primary_key
        elif table in CURRENT_VIEWS:
            spec = CURRENT_VIEWS[table]
            order = spec.natural_key[0]
        else:
            raise KeyError(f"{table!r} is not a warehouse table or view")
        items = [
            sql.SQL("{}::text AS {}").format(sql.Identifier(c.name), sql.Identifier(c.name))
            if c.kind is Kind.MONEY
            else sql.Identifier(c.name)
            for c in spec.columns
        ]
        query = sql.SQL("SELECT {cols} FROM {rel} ORDER BY {pk}").format(
            cols=sql.SQL(", ").join(items), rel=sql.Identifier(table), pk=sql.Identifier(order)
        )
        arrow = self._with_schema(lambda: self._fetch_arrow(query.as_string()))
        frame = pl.from_arrow(arrow)
        assert isinstance(frame, pl.DataFrame)
        return frame.select(pl.col(c.name).cast(c.dtype, strict=True) for c in spec.columns)

    def _fetch_arrow(self, query: str) -> Any:
        """Run a query through ADBC (binary COPY into Arrow): fast for whole tables."""
        with connect_adbc(self.resolved_url()) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    def scalar(
        self, query: sql.Composable | str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> Any:
        """The first column of the first row of `query` (None when it returns no row)."""
        row = self._on_connection(lambda conn: conn.execute(query, params).fetchone())  # type: ignore[arg-type]
        return None if row is None else row[0]

    def fetch_one_dict(
        self, query: sql.Composable | str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The first row of `query` as {column name: value} (empty when it returns no row)."""

        def run(conn: psycopg.Connection) -> dict[str, Any]:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            row = cur.fetchone()
            names = [d.name for d in cur.description or []]
            return {} if row is None else dict(zip(names, row, strict=True))

        return self._on_connection(run)

    def row_counts(self) -> dict[str, int]:
        """Rows in each of the 11 warehouse tables, in spec order."""
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {name}, count(*) FROM {table}").format(
                name=sql.Literal(name), table=sql.Identifier(name)
            )
            for name in WAREHOUSE_TABLES
        )
        counts: dict[str, int] = self._on_connection(lambda conn: dict(conn.execute(query).fetchall()))
        return {name: counts[name] for name in WAREHOUSE_TABLES}

    # -- helpers -------------------------------------------------------------------------------

    def _on_connection(self, work: Callable[[psycopg.Connection], _T]) -> _T:
        """`work(conn)` on a new connection, after ensure_schema (as `_with_schema`)."""

        def run() -> _T:
            with self.connect() as conn:
                return work(conn)

        return self._with_schema(run)

    def _with_schema(self, work: Callable[[], _T], retry: Callable[[], bool] = lambda: True) -> _T:
        """`work()` after ensure_schema; once more after re-running the DDL if a relation is missing
        (and `retry()` says the work can run again).

        The per-process schema cache goes stale when the warehouse database is dropped and
        recreated while this process runs (e.g. a reset of the embedded demo warehouse).
        """
        self.ensure_schema()
        try:
            return work()
        except (psycopg.errors.UndefinedTable, adbc_driver_manager.Error) as exc:
            if getattr(exc, "sqlstate", None) != "42P01" or not retry():
                raise
        self.ensure_schema(force=True)
        return work()

    @staticmethod
    def _spec(table: str, *, fact: bool) -> TableSpec:
        spec = WAREHOUSE_TABLES.get(table)
        if spec is None:
            raise KeyError(f"{table!r} is not a warehouse table")
        if spec.is_fact != fact:
            use = "append_facts" if spec.is_fact else "upsert_dimension"
            raise ValueError(f"{table!r} is a {'fact' if spec.is_fact else 'dimension'}; load it with {use}")
        return spec
