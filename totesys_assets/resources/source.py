"""The totesys source: a read-only PostgreSQL session that bulk-extracts rows into Polars.

Extraction goes through ADBC (libpq's binary COPY into Arrow), never row-by-row fetches. Money is
read as text and parsed to Decimal(10,2) (exact), timestamps are truncated to milliseconds (the
source is timestamp(3)), so the lake holds the source values as they are.
"""

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import polars as pl
from psycopg import sql
from pydantic import Field

from totesys_assets.pipelining import concurrently
from totesys_assets.resources.errors import ConfigurationFailure, connection_error
from totesys_assets.settings import ENV_SOURCE_URL
from totesys_assets.specs import SOURCE_TABLES, Kind, TableSpec


class SourceError(RuntimeError):
    """The source cannot be reached; transient, so the asset's retry policy may retry it."""


class SourceAccessError(ConfigurationFailure, SourceError):
    """The source refused the configured user or database: fails at once, without retries."""


class SourceSchemaError(dg.Failure):
    """The source does not match the specs (missing table, changed column, unfit value).

    Retrying cannot fix this, so it fails the step at once with the table and column named.
    """

    def __init__(self, message: str):
        super().__init__(description=message, allow_retries=False)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _select_list(spec: TableSpec) -> sql.Composable:
    items: list[sql.Composable] = []
    for col in spec.columns:
        ident = sql.Identifier(col.name)
        if col.kind in (Kind.MONEY, Kind.ENUM):
            items.append(sql.SQL("{}::text AS {}").format(ident, ident))
        else:
            items.append(ident)
    return sql.SQL(", ").join(items)


# The window's bounds reach the extract as transaction-local settings, bound as parameters by
# SET_WINDOW. The SELECT itself then has no parameters, and ADBC runs a parameterless query as a
# binary COPY streamed into Arrow. With $1/$2 it cannot: libpq holds the whole result in memory
# first. Each bound is read in a scalar subquery, evaluated once per query: compared directly,
# current_setting()::timestamp is evaluated per row of the scan.
WINDOW_START, WINDOW_END = "totesys.extract_start", "totesys.extract_end"
SET_WINDOW = f"SELECT set_config('{WINDOW_START}', $1, true), set_config('{WINDOW_END}', $2, true)"


def row_hash_expr(spec: TableSpec) -> sql.Composable:
    """The source's hash of a row's content (its spec columns, as PostgreSQL prints the row).

    `hashtextextended` is the hash PostgreSQL's hash partitioning relies on, so it is stable across
    versions; a column the specs do not know does not change it.
    """
    row = sql.SQL(", ").join(sql.Identifier(c.name) for c in spec.columns)
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(row)


def fingerprint_query(spec: TableSpec) -> str:
    """Per partition day of last_updated: row count and the sum of the row hashes, for the rows in
    the window set by SET_WINDOW; days before $1 count as $1, days after $2 as $2 (the first and
    the current partition hold them). One aggregate scan; the sum does not depend on row order."""
    return (
        sql.SQL(
            "SELECT greatest(least(last_updated::date, $2::date), $1::date)::text AS day, count(*) AS n, "
            "sum({hash})::text AS h FROM {table} "
            "WHERE last_updated >= (SELECT current_setting({start})::timestamp) "
            "AND last_updated < (SELECT current_setting({end})::timestamp) GROUP BY 1 ORDER BY 1"
        )
        .format(
            hash=row_hash_expr(spec),
            table=sql.Identifier(spec.name),
            start=sql.Literal(WINDOW_START),
            end=sql.Literal(WINDOW_END),
        )
        .as_string()
    )


def extract_query(spec: TableSpec) -> str:
    """SELECT of one table's rows with last_updated in the window set by SET_WINDOW.

    No ORDER BY: the lake sorts each day's object itself, and a server-side sort of a whole
    history (beyond work_mem, so on disk) would only slow the source down.
    """
    return (
        sql.SQL(
            "SELECT {cols}, {hash} AS _row_hash FROM {table} "
            "WHERE last_updated >= (SELECT current_setting({start})::timestamp) "
            "AND last_updated < (SELECT current_setting({end})::timestamp)"
        )
        .format(
            cols=_select_list(spec),
            hash=row_hash_expr(spec),
            table=sql.Identifier(spec.name),
            start=sql.Literal(WINDOW_START),
            end=sql.Literal(WINDOW_END),
        )
        .as_string()
    )


def to_lake_frame(spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """Cast an extracted frame to the lake schema, naming the column of any value that does not fit."""
    exprs = []
    for col in spec.columns:
        if col.name not in frame.columns:
            raise SourceSchemaError(
                f"source table {spec.name!r}: column {col.name!r} missing from the extract"
            )
        exprs.append(pl.col(col.name).cast(col.dtype, strict=True))
    if "_row_hash" in frame.columns:
        exprs.append(pl.col("_row_hash").cast(pl.Int64))
    try:
        return frame.select(exprs)
    except pl.exceptions.InvalidOperationError as exc:
        for col in spec.columns:
            try:
                frame.select(pl.col(col.name).cast(col.dtype, strict=True))
            except pl.exceptions.InvalidOperationError:
                bad = frame.filter(
                    pl.col(col.name).cast(col.dtype, strict=False).is_null() & pl.col(col.name).is_not_null()
                )
                value = bad[col.name][0] if bad.height else "?"
                raise SourceSchemaError(
                    f"source table {spec.name!r}, column {col.name!r}: value {value!r} does not fit "
                    f"{col.pg_type}"
                ) from exc
        raise


class TotesysSource(dg.ConfigurableResource):
    """Read-only access to the totesys OLTP database."""

    url: str | None = Field(
        default=None,
        description="postgresql:// URL of the totesys database (TOTESYS_DB_URL); unset = embedded demo source.",
    )

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        from totesys_assets import embedded

        return embedded.source_url()

    @contextlib.contextmanager
    def connect(self) -> Iterator[adbc.Connection]:
        url = self.resolved_url()
        try:
            conn = adbc.connect(url)
        except adbc_driver_manager.Error as exc:
            raise connection_error(
                "the totesys source", ENV_SOURCE_URL, url, exc, SourceError, SourceAccessError
            ) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SET default_transaction_read_only = on")
                # An extract and its fingerprints are read in one transaction: the same snapshot.
                cur.execute("SET default_transaction_isolation = 'repeatable read'")
            conn.commit()
            yield conn
        finally:
            conn.close()

    def check_schema(self, conn: adbc.Connection, specs: list[TableSpec]) -> None:
        """Fail with the table and column named when the live source no longer matches the specs."""
        with conn.cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
            rows = cur.fetchall()
        live: dict[str, dict[str, str]] = {}
        for table, column, data_type in rows:
            live.setdefault(table, {})[column] = data_type
        for spec in specs:
            if spec.name not in live:
                raise SourceSchemaError(f"source table {spec.name!r} does not exist in the totesys database")
            for col in spec.columns:
                found = live[spec.name].get(col.name)
                if found is None:
                    raise SourceSchemaError(
                        f"source table {spec.name!r} has no column {col.name!r} (expected {col.pg_type})"
                    )
                if found != col.info_schema_type:
                    raise SourceSchemaError(
                        f"source column {spec.name}.{col.name} has type {found!r}, "
                        f"expected {col.info_schema_type!r}"
                    )

    def extract(self, spec: TableSpec, start: datetime | None, end: datetime | None) -> pl.DataFrame:
        """Every row whose last_updated is in [start, end) (None: unbounded), in the lake schema
        plus the source's row hash `_row_hash`."""
        with self.snapshot(spec) as snap:
            return snap.extract(start, end)

    @contextlib.contextmanager
    def snapshot(self, spec: TableSpec) -> Iterator["SourceSnapshot"]:
        """One table read in one transaction (repeatable read): its fingerprints and extracts, all
        from the same snapshot (what a run stores is what the fingerprints it records describe)."""
        with self.connect() as conn:
            self.check_schema(conn, [spec])
            with conn.cursor() as cur:
                yield SourceSnapshot(spec, cur)
            conn.commit()

    def fingerprints(
        self, specs: list[TableSpec], first_day: str, last_day: str, since: datetime | None = None
    ) -> dict[str, dict[str, tuple[int, str]]]:
        """table -> day -> (rows, hash) over each table's history (from `since`, else all of it):
        one read-only aggregate query per table (the change detector's probe), two tables at a time
        on two connections (each table is compared on its own, so one snapshot per table is enough)."""
        # Largest first, so the two connections finish together.
        order = sorted(specs, key=lambda s: s.name not in FINGERPRINT_FIRST)

        def one(spec: TableSpec) -> tuple[str, dict[str, tuple[int, str]]]:
            with self.connect() as conn:
                with conn.cursor() as cur:
                    cur.execute(SET_WINDOW, parameters=_window(since, None))
                    cur.fetchall()
                    cur.execute(fingerprint_query(spec), parameters=(first_day, last_day))
                    days = {day: (int(n), str(h)) for day, n, h in cur.fetchall()}
                conn.commit()
            return spec.name, days

        return dict(concurrently(order, one, workers=FINGERPRINT_CONNECTIONS))

    def existing_ids(self, spec: TableSpec, ids: list[int]) -> set[int]:
        """Which of these primary keys the source still holds (a bound list, no SQL built from it)."""
        if not ids:
            return set()
        query = sql.SQL(
            "SELECT {pk} FROM {table} WHERE {pk} = ANY(string_to_array($1, ',')::integer[])"
        ).format(pk=sql.Identifier(spec.primary_key), table=sql.Identifier(spec.name))
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(query.as_string(), parameters=(",".join(str(int(i)) for i in ids),))
            found = {int(r[0]) for r in cur.fetchall()}
            conn.commit()
        return found

    def max_last_updated(self) -> dict[str, datetime | None]:
        """max(last_updated) of every source table, in one cheap query (the change sensor's probe)."""
        parts = [
            sql.SQL("SELECT {name} AS t, max(last_updated) AS m FROM {table}").format(
                name=sql.Literal(name), table=sql.Identifier(name)
            )
            for name in SOURCE_TABLES
        ]
        query = sql.SQL(" UNION ALL ").join(parts).as_string()
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(query)
            rows = cur.fetchall()
        return {t: m for t, m in rows}


class SourceSnapshot:
    """Reads of one table within one source transaction (`TotesysSource.snapshot`)."""

    def __init__(self, spec: TableSpec, cursor: Any):
        self.spec = spec
        self._cur = cursor

    def _set_window(self, start: datetime | None, end: datetime | None) -> None:
        self._cur.execute(SET_WINDOW, parameters=_window(start, end))
        self._cur.fetchall()

    def extract(self, start: datetime | None, end: datetime | None) -> pl.DataFrame:
        """The rows with last_updated in [start, end) (None: unbounded), in the lake schema plus
        the source's row hash `_row_hash`."""
        self._set_window(start, end)
        self._cur.execute(extract_query(self.spec))
        return to_lake_frame(self.spec, pl.from_arrow(self._cur.fetch_arrow_table()))  # type: ignore[arg-type]

    def extract_batches(self, start: datetime | None, end: datetime | None) -> Iterator[pl.DataFrame]:
        """`extract` as a stream of frames (ADBC's record batches of one binary COPY, at least one
        frame), so a long history is read in one scan without holding it."""
        self._set_window(start, end)
        self._cur.execute(extract_query(self.spec))
        reader = self._cur.fetch_record_batch()
        empty = True
        for batch in reader:
            empty = False
            yield to_lake_frame(self.spec, pl.from_arrow(batch))  # type: ignore[arg-type]
        if empty:
            yield to_lake_frame(self.spec, pl.from_arrow(reader.schema.empty_table()))  # type: ignore[arg-type]

    def fingerprints(
        self, start: datetime | None, end: datetime | None, first_day: str, last_day: str
    ) -> dict[str, tuple[int, str]]:
        """day -> (rows, hash) of the rows in [start, end), days clamped to [first_day, last_day]."""
        self._set_window(start, end)
        self._cur.execute(fingerprint_query(self.spec), parameters=(first_day, last_day))
        return {day: (int(n), str(h)) for day, n, h in self._cur.fetchall()}


FINGERPRINT_CONNECTIONS = 2
FINGERPRINT_FIRST = ("payment", "transaction", "sales_order", "purchase_order")


def _window(start: datetime | None, end: datetime | None) -> tuple[str, str]:
    """SET_WINDOW's parameters; an open bound is PostgreSQL's -infinity / infinity."""
    return (
        _naive(start).isoformat() if start else "-infinity",
        _naive(end).isoformat() if end else "infinity",
    )


def _naive(ts: datetime) -> datetime:
    """Partition windows are UTC-aware; the source's timestamp(3) columns are naive."""
    return ts.replace(tzinfo=None) if ts.tzinfo else ts
