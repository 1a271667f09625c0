"""The warehouse: PostgreSQL holding the three star schemas, loaded in bulk with COPY.

Every load runs in one transaction:

1. the frame is checked against the table spec (columns, types, duplicate keys) and cast to it;
2. it is COPYed (CSV, streamed in chunks) into a temporary staging table that dies with the
   transaction;
3. one set-based INSERT … SELECT moves it into the target:
   * dimensions upsert on the primary key and rewrite a row only when a value changed;
   * facts append one row per new version of a source row (natural key = id, last_updated_date,
     last_updated_time, version_hash: an in-place change is a new version) and skip versions already loaded, so reloading is a no-op and the serial
     `*_record_id` of a version never changes. New rows are inserted oldest version first, so record
     ids follow time.
4. COMMIT. Any error rolls the whole load back: the table is exactly as before.

Large fact loads (`bulk_load_min_rows`) drop the table's foreign keys and version indexes inside the
transaction and add them back before COMMIT: PostgreSQL then validates every row in one set-based
join instead of one trigger query per row per key (about 6x faster for a first backfill), and builds
each index with one sort instead of a random b-tree insert per row. The table is locked for the
load, the constraints are re-validated before commit, and a failure or a crash restores them with
the rollback: every DDL statement of a load is inside the load's own transaction, so whenever no
load is in flight every constraint is in place. A large first load into an empty table goes in by
ADBC's binary COPY of the sorted Arrow frame (about twice as fast as CSV), in one transaction on an
ADBC connection, with the same constraint handling and the same error messages (ADBC's diagnostics
are mapped). A first load into an empty fact COPYs into a temporary stage before it takes any lock
on a dimension, so two of them run side by side: dropping a fact's foreign key locks the dimension
it references until COMMIT, and only each load's last part (moving the rows in, building the
indexes, re-adding the keys) has to take turns.

CSV keeps NULL and the empty string apart (NULL is an unquoted empty field, Polars quotes an empty
string as ""), money travels as exact decimal text, times keep their fractions.
Constraint violations become a `WarehouseLoadError` that names the table, column and value.
No message ever contains the password of the warehouse URL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import dagster as dg
import polars as pl
import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from pydantic import Field

from totesys_assets.ddl import (
    foreign_key_statements,
    primary_key_statements,
    schema_statements,
    version_index_statements,
)
from totesys_assets.resources.errors import ConfigurationFailure, connection_error
from totesys_assets.settings import ENV_WAREHOUSE_URL
from totesys_assets.specs import WAREHOUSE_TABLES, Kind, TableSpec

# Rows per CSV chunk streamed into COPY (bounded memory; serialising overlaps with sending).
COPY_CHUNK_ROWS = 100_000
# Memory for re-building a fact's indexes after a bulk load (sorts in memory instead of on disk).
BULK_MAINTENANCE_WORK_MEM = "256MB"
# Time literals keep microseconds; the time(3) columns round them as PostgreSQL does.
_TIME_FORMAT = "%H:%M:%S%.6f"
# One advisory lock key for the warehouse DDL (stable across processes and releases).
DDL_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"totesys_assets.warehouse.ddl").digest()[:8], "big", signed=True
)

_T = TypeVar("_T")

# Process-wide: warehouse URLs whose schema this process has already ensured.
_schema_ready: set[str] = set()
_schema_lock = threading.Lock()


class WarehouseError(RuntimeError):
    """Base class of the warehouse resource's errors."""


class WarehouseConnectionError(WarehouseError):
    """The warehouse cannot be reached (the message names the URL without its password)."""


class WarehouseAccessError(ConfigurationFailure, WarehouseConnectionError):
    """The warehouse refused the configured user or database: fails at once, without retries."""


class WarehouseSchemaError(WarehouseError):
    """A warehouse table exists with columns that differ from the specs."""


class WarehouseLoadError(WarehouseError):
    """A load was rejected and rolled back; the table is unchanged.

    `table`, `column` and `value` name the offending value where it is known; `constraint` and
    `sqlstate` come from PostgreSQL's diagnostics when the database rejected the load.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str,
        column: str | None = None,
        value: Any = None,
        constraint: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.column = column
        self.value = value
        self.constraint = constraint
        self.sqlstate = sqlstate


@dataclass(frozen=True)
class LoadResult:
    """What one load did. For facts `unchanged` counts versions already loaded (alias `skipped`)."""

    table: str
    is_fact: bool
    rows: int  # distinct rows in the loaded frame
    inserted: int
    updated: int
    unchanged: int
    table_rows: int  # rows in the whole table after the load
    seconds: float
    bulk: bool = False  # foreign keys validated set-based (large fact load)

    @property
    def skipped(self) -> int:
        return self.unchanged

    def metadata(self) -> dict[str, Any]:
        """Dagster metadata for the materialization of the table's asset."""
        out: dict[str, Any] = {
            "dagster/row_count": self.table_rows,
            "rows_loaded": self.rows,
            "rows_inserted": self.inserted,
        }
        if self.is_fact:
            out["versions_skipped"] = self.unchanged
        else:
            out["rows_updated"] = self.updated
            out["rows_unchanged"] = self.unchanged
        out["load_seconds"] = dg.MetadataValue.float(round(self.seconds, 3))
        return out


# ---------------------------------------------------------------------------------------------
# SQL derived from the specs
# ---------------------------------------------------------------------------------------------


def current_view_name(spec: TableSpec) -> str:
    return f"{spec.name}_current"


CURRENT_VIEWS: dict[str, TableSpec] = {
    current_view_name(s): s for s in WAREHOUSE_TABLES.values() if s.is_fact
}


def _idents(names: Sequence[str], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


# Rows deleted at the source: one row per tombstone the lake captured (which fact, which source
# row, its last version's last_updated, when the deletion was observed).
DELETIONS_TABLE = "fact_deletions"
DELETIONS_SCHEMA = pl.Schema(
    {"source_id": pl.Int32(), "last_updated": pl.Datetime("ms"), "observed_at": pl.Datetime("ms")}
)


def deletions_statement() -> sql.Composable:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (fact text NOT NULL, source_id integer NOT NULL, "
        "last_updated timestamp(3) NOT NULL, observed_at timestamp(3) NOT NULL, "
        "PRIMARY KEY (fact, source_id, observed_at))"
    ).format(sql.Identifier(DELETIONS_TABLE))


def current_view_statement(spec: TableSpec) -> sql.Composable:
    """The latest captured version of every source row of a fact: newest last_updated, ties broken
    by capture order (then record id); rows whose deletion was observed after that version was
    captured are left out (`fact_deletions` keeps when)."""
    natural_id, updated_date, updated_time, *_ = spec.natural_key
    return sql.SQL(
        "CREATE OR REPLACE VIEW {view} AS SELECT {ccols} FROM (SELECT DISTINCT ON ({id}) {cols} FROM {table} "
        "ORDER BY {id}, {d} DESC, {t} DESC, captured_at DESC, {pk} DESC) c WHERE NOT EXISTS "
        "(SELECT 1 FROM {deletions} x WHERE x.fact = {name} AND x.source_id = c.{id} "
        "AND x.observed_at >= c.captured_at)"
    ).format(
        view=sql.Identifier(current_view_name(spec)),
        id=sql.Identifier(natural_id),
        cols=_idents(spec.column_names),
        ccols=_idents(spec.column_names, "c"),
        table=sql.Identifier(spec.name),
        d=sql.Identifier(updated_date),
        t=sql.Identifier(updated_time),
        pk=sql.Identifier(spec.primary_key),
        deletions=sql.Identifier(DELETIONS_TABLE),
        name=sql.Literal(spec.name),
    )


# Fact versions a load set aside (`split_fact`), in a schema of their own beside the star schema.
QUARANTINE_SCHEMA = "quarantine"
REJECTED_TABLE = "rejected_versions"
OPEN_REJECTIONS_VIEW = "open_rejections"
_REJECTED_COLUMNS = [
    "fact",
    "source_table",
    "source_id",
    "last_updated",
    "column_name",
    "value",
    "reason",
    "source_row",
]


def quarantine_statements() -> list[sql.Composable]:
    """The quarantine: one row per rejected value of a fact's source version, and the view of those
    not yet superseded by a loaded version of the same source row (or loaded themselves since)."""
    schema = sql.Identifier(QUARANTINE_SCHEMA)
    table = sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE)
    superseded = sql.SQL(" OR ").join(
        sql.SQL(
            "(r.fact = {name} AND EXISTS (SELECT 1 FROM {fact} f WHERE f.{id} = r.source_id "
            "AND (f.{d}, f.{t}) >= (r.last_updated::date, r.last_updated::time)))"
        ).format(
            name=sql.Literal(spec.name),
            fact=sql.Identifier(spec.name),
            id=sql.Identifier(spec.natural_key[0]),
            d=sql.Identifier(spec.natural_key[1]),
            t=sql.Identifier(spec.natural_key[2]),
        )
        for spec in WAREHOUSE_TABLES.values()
        if spec.is_fact
    )
    return [
        # (CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when the schema exists)
        sql.SQL(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {name}) "
            "THEN CREATE SCHEMA {schema}; END IF; END $$"
        ).format(name=sql.Literal(QUARANTINE_SCHEMA), schema=schema),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (fact text NOT NULL, source_table text NOT NULL, "
            "source_id integer NOT NULL, last_updated timestamp(3) NOT NULL, column_name text NOT NULL, "
            "value text, reason text NOT NULL, source_row jsonb NOT NULL, "
            "first_seen timestamptz NOT NULL DEFAULT now(), last_seen timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY (fact, source_id, last_updated, column_name))"
        ).format(table),
        sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT r.* FROM {} r WHERE NOT ({})").format(
            sql.Identifier(QUARANTINE_SCHEMA, OPEN_REJECTIONS_VIEW), table, superseded
        ),
    ]


def warehouse_statements() -> list[sql.Composable]:
    """The whole warehouse DDL: tables, keys, foreign keys, the `*_current` views and the quarantine."""
    specs = list(WAREHOUSE_TABLES.values())
    out = schema_statements(specs, source_style=False)
    out.append(deletions_statement())
    out.extend(current_view_statement(s) for s in specs if s.is_fact)
    out.extend(quarantine_statements())
    return out


def _stage_name(spec: TableSpec) -> str:
    return f"_stage_{spec.name}"


def _upsert_statement(spec: TableSpec) -> sql.Composable:
    pk = spec.primary_key
    cols = spec.insert_columns
    others = [c for c in cols if c != pk]
    if others:
        conflict: sql.Composable = sql.SQL(
            "DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new})"
        ).format(
            sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("excluded", c)) for c in others
            ),
            old=_idents(others, "t"),
            new=_idents(others, "excluded"),
        )
    else:
        conflict = sql.SQL("DO NOTHING")
    return sql.SQL(
        "WITH upserted AS ("
        "INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {stage} ORDER BY {pk} "
        "ON CONFLICT ({pk}) {conflict} RETURNING (t.xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
    ).format(
        table=sql.Identifier(spec.name),
        cols=_idents(cols),
        stage=sql.Identifier(_stage_name(spec)),
        pk=sql.Identifier(pk),
        conflict=conflict,
    )


def _drop_loaded_versions_statement(spec: TableSpec) -> sql.Composable:
    """Remove from staging every version the fact table already holds (its rowcount = skipped)."""
    same_version = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier("f", c), sql.Identifier("s", c)) for c in spec.natural_key
    )
    return sql.SQL("DELETE FROM {stage} AS s USING {table} AS f WHERE {same_version}").format(
        stage=sql.Identifier(_stage_name(spec)), table=sql.Identifier(spec.name), same_version=same_version
    )


def _append_statement(spec: TableSpec, *, on_conflict: bool = True) -> sql.Composable:
    """Insert the staged new versions oldest first, so serial record ids follow time.

    ON CONFLICT DO NOTHING covers a concurrent load of the same versions committing in between.
    A bulk load goes without: it holds the table's exclusive lock and has dropped the unique
    index that ON CONFLICT needs (re-creating it re-checks uniqueness before COMMIT).
    """
    natural_id, updated_date, updated_time, *_ = spec.natural_key
    return sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ORDER BY {order} {conflict}"
    ).format(
        conflict=sql.SQL("ON CONFLICT ({}) DO NOTHING").format(_idents(spec.natural_key))
        if on_conflict
        else sql.SQL(""),
        table=sql.Identifier(spec.name),
        cols=_idents(spec.insert_columns),
        stage=sql.Identifier(_stage_name(spec)),
        order=_idents([updated_date, updated_time, "captured_at", natural_id]),
    )


def _serial_sequence(table: str, column: str) -> sql.Composable:
    return sql.SQL("pg_get_serial_sequence({}, {})").format(
        sql.Literal(sql.Identifier(table).as_string()), sql.Literal(column)
    )


def _sequence_state_statement(sequence: str) -> str:
    """`last_value, is_called` of a sequence named as `pg_get_serial_sequence` returns it (quoted)."""
    return sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(sequence)).as_string()


def _advance_serial_statement(table: str, column: str, last: int) -> str:
    """Move a serial column's sequence to `last` (the ids up to it are taken)."""
    return (
        sql.SQL("SELECT setval({seq}, {last})")
        .format(seq=_serial_sequence(table, column), last=sql.Literal(int(last)))
        .as_string()
    )


def _foreign_key_drop_statements(spec: TableSpec) -> list[sql.Composable]:
    """Drop a fact's foreign keys (each takes an ACCESS EXCLUSIVE lock on the dimension it references)."""
    table = sql.Identifier(spec.name)
    return [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            table, sql.Identifier(f"{spec.name}_{c.name}_fkey")
        )
        for c in spec.foreign_keys
    ]


def _foreign_key_restore_statements(spec: TableSpec) -> list[sql.Composable]:
    """Add a fact's missing foreign keys back, each validated by one set-based scan.

    The dimensions are locked first, in name order, as adding a key would lock them one by one:
    loads that restore keys at the same time then queue instead of deadlocking.
    """
    dimensions = sorted({c.references.split(".")[0] for c in spec.foreign_keys})  # type: ignore[union-attr]
    lock = sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(_idents(dimensions))
    return [lock, *foreign_key_statements(spec, source_style=False)]


def _bulk_drop_statements(spec: TableSpec) -> list[sql.Composable]:
    """Lock a fact table and drop its foreign keys and version indexes (bulk loads).

    Dropping a foreign key locks the dimension it references (ACCESS EXCLUSIVE) until COMMIT; the
    dimensions are locked first, in name order, so that two loads doing this queue instead of
    deadlocking.
    """
    lock = sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE")
    dimensions = sorted({c.references.split(".")[0] for c in spec.foreign_keys})  # type: ignore[union-attr]
    return [
        lock.format(sql.Identifier(spec.name)),
        lock.format(_idents(dimensions)),
        *_foreign_key_drop_statements(spec),
        *version_index_statements(spec)[0],
    ]


def _referencing_facts(spec: TableSpec) -> list[TableSpec]:
    """The fact tables with a foreign key to this dimension."""
    return [
        f
        for f in WAREHOUSE_TABLES.values()
        if f.is_fact and any(c.references.split(".")[0] == spec.name for c in f.foreign_keys)  # type: ignore[union-attr]
    ]


def _referencing_key_drop_statements(spec: TableSpec, facts: Sequence[TableSpec]) -> list[sql.Composable]:
    """Drop the facts' foreign keys to a dimension, then the dimension's primary key."""
    out = [
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            sql.Identifier(f.name), sql.Identifier(f"{f.name}_{c.name}_fkey")
        )
        for f in facts
        for c in f.foreign_keys
        if c.references.split(".")[0] == spec.name  # type: ignore[union-attr]
    ]
    return out + primary_key_statements(spec)[0]


def _referencing_key_restore_statements(spec: TableSpec, facts: Sequence[TableSpec]) -> list[sql.Composable]:
    memory = sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BULK_MAINTENANCE_WORK_MEM))
    restore: list[sql.Composable] = [memory, *primary_key_statements(spec)[1]]
    for f in facts:
        restore += foreign_key_statements(f, source_style=False, referencing=spec.name)
    return restore


def _bulk_restore_statements(spec: TableSpec) -> list[sql.Composable]:
    """Build the version indexes (one sort each) and re-validate the foreign keys set-based."""
    memory = sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(BULK_MAINTENANCE_WORK_MEM))
    return [memory, *version_index_statements(spec)[1], *_foreign_key_restore_statements(spec)]


class _AdbcDiagnostics:
    """An ADBC error seen through psycopg's `Error.diag` interface, for `_load_error`."""

    FIELDS = {
        "table_name": "PG_DIAG_TABLE_NAME",
        "column_name": "PG_DIAG_COLUMN_NAME",
        "constraint_name": "PG_DIAG_CONSTRAINT_NAME",
        "message_detail": "PG_DIAG_MESSAGE_DETAIL",
        "message_primary": "PG_DIAG_MESSAGE_PRIMARY",
        "context": "PG_DIAG_CONTEXT",
    }

    def __init__(self, exc: adbc_driver_manager.Error) -> None:
        details = {
            (k.decode() if isinstance(k, bytes) else k): (
                v.decode(errors="replace") if isinstance(v, bytes) else v
            )
            for k, v in (exc.details or [])
        }
        self.diag = self
        self.sqlstate = exc.sqlstate
        for attr, key in self.FIELDS.items():
            setattr(self, attr, details.get(key))
        self._text = str(exc)

    def __str__(self) -> str:
        return self._text


def _expected_pg_type(col_kind: Kind, pg_type: str) -> str:
    return "integer" if col_kind is Kind.SERIAL else pg_type


# ---------------------------------------------------------------------------------------------
# Frame preparation (checked before anything touches the database)
# ---------------------------------------------------------------------------------------------


def prepare_frame(spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The frame's load columns cast to the spec, exact duplicate rows removed.

    Raises `WarehouseLoadError` naming the table, column and value for a missing or unknown column,
    a value that does not fit the column's type, or one key with two different rows.
    """
    wanted = spec.insert_columns
    for name in frame.columns:
        if name not in wanted:
            why = "is assigned by the warehouse" if name in spec.column_names else "is not a column of it"
            raise WarehouseLoadError(
                f"warehouse table {spec.name!r}: column {name!r} in the frame {why}",
                table=spec.name,
                column=name,
            )
    for name in wanted:
        if name not in frame.columns:
            raise WarehouseLoadError(
                f"warehouse table {spec.name!r}: column {name!r} is missing from the frame",
                table=spec.name,
                column=name,
            )
    out = frame.select(_cast_column(spec, frame[name]) for name in wanted)
    key = list(spec.natural_key) if spec.is_fact else [spec.primary_key]
    if out.select(pl.struct(key).n_unique()).item() == out.height:
        return out
    out = out.unique(maintain_order=True)
    dupes = out.filter(pl.struct(key).is_duplicated())
    if dupes.height:
        first = dupes.row(0, named=True)
        value = {k: first[k] for k in key}
        raise WarehouseLoadError(
            f"warehouse table {spec.name!r}: the frame holds different rows for the same key "
            f"{_format_key(value)}; nothing was loaded",
            table=spec.name,
            column=", ".join(key),
            value=value if len(key) > 1 else value[key[0]],
        )
    return out


def _cast_column(spec: TableSpec, series: pl.Series) -> pl.Series:
    """`series` in its column's dtype; refuses lossy casts (overflow, money beyond 2 decimals, floats)."""
    col = spec.column(series.name)
    dtype = col.dtype

    def fail(value: Any, why: str) -> WarehouseLoadError:
        return WarehouseLoadError(
            f"warehouse table {spec.name!r}, column {col.name!r}: value {value!r} {why}; nothing was loaded",
            table=spec.name,
            column=col.name,
            value=value,
        )

    if series.dtype == dtype:
        if dtype == pl.String:
            with_nul = series.filter(series.str.contains("\x00", literal=True))
            if with_nul.len():
                raise fail(with_nul[0], "contains a NUL character, which PostgreSQL text cannot store")
        return series

    if col.kind is Kind.MONEY and series.dtype.is_float():
        bad = series.drop_nulls()
        raise fail(bad[0] if bad.len() else None, f"is a {series.dtype} (money must be an exact Decimal)")
    try:
        cast = series.cast(dtype, strict=True)
    except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
        try:
            lax = series.cast(dtype, strict=False)
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError):
            first = series.drop_nulls()
            raise fail(
                first[0] if first.len() else None,
                f"has dtype {series.dtype}, expected {dtype} ({col.pg_type})",
            ) from exc
        bad = series.filter(lax.is_null() & series.is_not_null())
        raise fail(bad[0] if bad.len() else None, f"does not fit {col.pg_type}") from exc
    if isinstance(series.dtype, pl.Decimal) and (series.dtype.scale or 0) > (dtype.scale or 0):  # type: ignore[attr-defined]
        lossy = series.filter(cast.cast(series.dtype) != series)
        if lossy.len():
            raise fail(lossy[0], f"has more decimals than {col.pg_type}")
    return cast


def _format_key(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _csv_chunks(frame: pl.DataFrame) -> Iterator[bytes]:
    for chunk in frame.iter_slices(COPY_CHUNK_ROWS):
        yield chunk.write_csv(include_header=False, time_format=_TIME_FORMAT).encode()


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)", re.S)
_COPY_CONTEXT = re.compile(r"column (?P<col>\w+): (?P<val>.*)")


def _load_error(spec: TableSpec, frame: pl.DataFrame, exc: psycopg.Error) -> WarehouseLoadError:
    """A message naming table, column and value from PostgreSQL's diagnostics."""
    diag = exc.diag
    table = diag.table_name or spec.name
    if table.startswith("_stage_"):
        table = spec.name
    column = diag.column_name
    constraint = diag.constraint_name
    detail = diag.message_detail or ""
    value: Any = None
    where = ""
    match = _KEY_DETAIL.search(detail)
    if match:
        column = column or match["cols"]
        value = match["vals"]
    elif exc.sqlstate == "23502" and column and column in frame.columns:
        # NOT NULL: name the row by its key instead of echoing the whole failing row.
        key = list(spec.natural_key) if spec.is_fact else [spec.primary_key]
        bad = frame.filter(pl.col(column).is_null())
        if bad.height:
            first = bad.row(0, named=True)
            where = f" in the row {_format_key({k: first[k] for k in key})}"
            if bad.height > 1:
                where += f" and {bad.height - 1} more"
        value = None
    elif diag.context and (copy_ctx := _COPY_CONTEXT.search(diag.context)):
        column = column or copy_ctx["col"]
        value = copy_ctx["val"]
    problem = diag.message_primary or str(exc).splitlines()[0]
    parts = [f"warehouse table {table!r}"]
    if column:
        parts.append(f"column {column!r}")
    message = ", ".join(parts) + ": "
    if exc.sqlstate == "23502":
        message += f"value NULL{where} rejected: "
    elif value is not None:
        message += f"value {value!r} rejected: "
    message += problem
    if detail and not detail.startswith("Failing row contains"):
        message += f" ({detail})"
    message += "; the load was rolled back and the table is unchanged"
    return WarehouseLoadError(
        message, table=table, column=column, value=value, constraint=constraint, sqlstate=exc.sqlstate
    )


# ---------------------------------------------------------------------------------------------
# The resource
# ---------------------------------------------------------------------------------------------


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
                    self._check_schema(conn)
            _schema_ready.add(url)

    @staticmethod
    def _check_schema(conn: psycopg.Connection) -> None:
        rows = conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped",
            (list(WAREHOUSE_TABLES),),
        ).fetchall()
        live: dict[str, dict[str, tuple[str, bool]]] = {}
        for table, column, pg_type, not_null in rows:
            live.setdefault(table, {})[column] = (pg_type, not_null)
        for spec in WAREHOUSE_TABLES.values():
            columns = live.get(spec.name, {})
            for col in spec.columns:
                expected = (_expected_pg_type(col.kind, col.pg_type), not col.nullable)
                found = columns.get(col.name)
                if found is None:
                    raise WarehouseSchemaError(
                        f"warehouse table {spec.name!r} exists without column {col.name!r} "
                        f"({col.pg_type}); migrate or drop the table"
                    )
                if found != expected:
                    raise WarehouseSchemaError(
                        f"warehouse column {spec.name}.{col.name} is {found[0]}"
                        f"{' NOT NULL' if found[1] else ' NULL'}, the spec says {expected[0]}"
                        f"{' NOT NULL' if expected[1] else ' NULL'}"
                    )
            extra = sorted(set(columns) - set(spec.column_names))
            if extra:
                raise WarehouseSchemaError(
                    f"warehouse table {spec.name!r} has columns the spec does not know: {', '.join(extra)}"
                )

    # -- loads ---------------------------------------------------------------------------------

    def upsert_dimension(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        _before_commit: Callable[[psycopg.Connection], None] | None = None,
    ) -> LoadResult:
        """Insert new rows and update changed ones (by primary key); unchanged rows are not rewritten."""
        spec = self._spec(table, fact=False)
        return self._load(spec, frame, _before_commit)

    def append_facts(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        _before_commit: Callable[[psycopg.Connection], None] | None = None,
    ) -> LoadResult:
        """Append one row per version not loaded yet (natural key); loaded versions are skipped."""
        spec = self._spec(table, fact=True)
        return self._load(spec, frame, _before_commit)

    def _load(
        self,
        spec: TableSpec,
        frame: pl.DataFrame,
        before_commit: Callable[[psycopg.Connection], None] | None,
    ) -> LoadResult:
        """One load in one transaction. `before_commit` is the test-only fault hook (see tests)."""
        started = time.perf_counter()
        staged = prepare_frame(spec, frame)
        return self._with_schema(lambda: self._load_prepared(spec, staged, before_commit, started))

    def _load_prepared(
        self,
        spec: TableSpec,
        staged: pl.DataFrame,
        before_commit: Callable[[psycopg.Connection], None] | None,
        started: float,
    ) -> LoadResult:
        # (the test-only fault hook takes a psycopg connection, so it always runs the staged path)
        if before_commit is None and staged.height >= self.bulk_load_min_rows:
            first_load = self._first_load(spec, staged, started)
            if first_load is not None:
                return first_load
        with self.connect() as conn:
            try:
                with conn.transaction():
                    if spec.is_fact:
                        self._stage(conn, spec, staged)
                        loaded = conn.execute(_drop_loaded_versions_statement(spec)).rowcount
                        bulk = self._use_bulk_path(conn, spec, staged.height - loaded)
                        if bulk:
                            for statement in _bulk_drop_statements(spec):
                                conn.execute(statement)
                        cur = conn.execute(_append_statement(spec, on_conflict=not bulk))
                        inserted, updated = cur.rowcount, 0
                        if bulk:
                            for statement in _bulk_restore_statements(spec):
                                conn.execute(statement)
                    else:
                        bulk = False
                        self._stage(conn, spec, staged)
                        counts = conn.execute(_upsert_statement(spec)).fetchone()
                        assert counts is not None
                        inserted, updated = counts
                    table_rows = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))
                    ).fetchone()[0]  # type: ignore[index]
                    if before_commit is not None:
                        before_commit(conn)
            except (psycopg.errors.IntegrityError, psycopg.errors.DataError) as exc:
                raise _load_error(spec, staged, exc) from exc
        return LoadResult(
            table=spec.name,
            is_fact=spec.is_fact,
            rows=staged.height,
            inserted=inserted,
            updated=updated,
            unchanged=staged.height - inserted - updated,
            table_rows=table_rows,
            seconds=time.perf_counter() - started,
            bulk=bulk,
        )

    @staticmethod
    def _stage(conn: psycopg.Connection, spec: TableSpec, frame: pl.DataFrame) -> None:
        """COPY the frame into a temporary table with the target's column types (no constraints)."""
        stage = sql.Identifier(_stage_name(spec))
        conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"
            ).format(stage=stage, cols=_idents(spec.insert_columns), table=sql.Identifier(spec.name))
        )
        WarehouseResource._copy(conn, stage, spec, frame)
        if frame.height >= 10_000:
            conn.execute(sql.SQL("ANALYZE {}").format(stage))

    @staticmethod
    def _copy(conn: psycopg.Connection, table: sql.Identifier, spec: TableSpec, frame: pl.DataFrame) -> None:
        """COPY the frame (CSV, streamed in chunks) into the table's insert columns."""
        copy = sql.SQL("COPY {table} ({cols}) FROM STDIN (FORMAT csv, NULL '')").format(
            table=table, cols=_idents(spec.insert_columns)
        )
        with conn.cursor() as cur:
            with cur.copy(copy, writer=QueuedLibpqWriter(cur)) as cp:
                for chunk in _csv_chunks(frame):
                    cp.write(chunk)

    def _first_load(self, spec: TableSpec, staged: pl.DataFrame, started: float) -> LoadResult | None:
        """A large load into an empty table, over ADBC's binary COPY of the Arrow frame, in one
        transaction. None if the table is not empty (checked again under the exclusive lock); the
        caller then takes the staged path.

        Facts go oldest version first (serial record ids follow time), first into a temporary
        stage: that COPY, the longest part, locks nothing but the fact. Then the dimensions are
        locked, the fact's foreign keys, primary key and version indexes dropped, the rows moved
        in by one INSERT … SELECT, and everything rebuilt and validated before COMMIT. Two first
        loads of facts run side by side: each waits for the dimensions only for that last part
        (dropping a foreign key locks its dimension until COMMIT). A crash anywhere rolls all of
        it back. Dimensions go straight in, in key order; their primary key is rebuilt as well
        when the facts referencing it are empty.
        """
        url = self.resolved_url()
        table = sql.Identifier(spec.name)
        is_empty = sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table).as_string()
        order = (
            [*spec.natural_key[1:3], "captured_at", spec.natural_key[0]]
            if spec.is_fact
            else [spec.primary_key]
        )
        try:
            conn = adbc.connect(url)
        except adbc_driver_manager.Error as exc:
            raise connection_error(
                "the warehouse", ENV_WAREHOUSE_URL, url, exc, WarehouseConnectionError, WarehouseAccessError
            ) from None
        with conn, conn.cursor() as cur:

            def execute(statement: sql.Composable | str) -> Any:
                cur.execute(statement if isinstance(statement, str) else statement.as_string())
                return cur.fetchone() if cur.description else None

            try:
                if not execute(is_empty)[0]:
                    conn.rollback()
                    return None
                execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
                if not execute(is_empty)[0]:
                    conn.rollback()
                    return None
                # A dimension's key is rebuilt too when the facts referencing it are empty (their
                # foreign keys to it are then re-added without a row to check): ×100
                # dim_transaction 2.2 -> 1.4 s.
                referencing = [] if spec.is_fact else _referencing_facts(spec)
                for fact in referencing:
                    execute(
                        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(fact.name))
                    )
                rebuild_key = bool(referencing) and all(
                    execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(f.name)))[0]
                    for f in referencing
                )
                if rebuild_key:
                    for statement in _referencing_key_drop_statements(spec, referencing):
                        execute(statement)
                frame = staged.sort(order).select(spec.insert_columns)
                serials = [c.name for c in spec.columns if c.kind is Kind.SERIAL]
                serial = serials[0] if serials and frame.height else None
                if serial is not None:
                    # The serial ids are sent with the rows: COPY then skips a nextval() per row
                    # (1.6M rows: 2.7 -> 2.4 s). The table is locked, so they are exactly what the
                    # database would have assigned in this order; the sequence moves past them as
                    # the load's last statement (a sequence ignores ROLLBACK: moved first, a load
                    # that died would leave a gap that shifts every id of the next one).
                    sequence = execute(sql.SQL("SELECT {}").format(_serial_sequence(spec.name, serial)))[0]
                    last, called = execute(_sequence_state_statement(sequence))
                    first = int(last) + 1 if called else int(last)
                    ids = pl.int_range(first, first + frame.height, dtype=pl.Int32, eager=True)
                    frame = frame.select(ids.alias(serial), *spec.insert_columns)
                if spec.is_fact:
                    stage = sql.Identifier(_stage_name(spec))
                    execute(sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DROP").format(stage, table))
                    cur.adbc_ingest(_stage_name(spec), frame.to_arrow(), mode="append", temporary=True)
                    # From here to COMMIT the dimensions are locked. Nothing references a fact's
                    # key, so it too is rebuilt.
                    for statement in [*_bulk_drop_statements(spec), *primary_key_statements(spec)[0]]:
                        execute(statement)
                    columns = _idents(frame.columns)
                    execute(
                        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                            table, columns, columns, stage
                        )
                    )  # (a temporary table is scanned in the order it was written: oldest first)
                    restore = _bulk_restore_statements(spec)  # SET maintenance_work_mem first
                    for statement in [restore[0], *primary_key_statements(spec)[1], *restore[1:]]:
                        execute(statement)
                else:
                    cur.adbc_ingest(spec.name, frame.to_arrow(), mode="append")
                if rebuild_key:
                    for statement in _referencing_key_restore_statements(spec, referencing):
                        execute(statement)
                if serial is not None:
                    execute(_advance_serial_statement(spec.name, serial, first + frame.height - 1))
                conn.commit()
                table_rows = frame.height  # the table was empty under the exclusive lock
            except adbc_driver_manager.Error as exc:
                conn.rollback()
                if exc.sqlstate and exc.sqlstate[:2] in ("22", "23"):
                    raise _load_error(spec, staged, _AdbcDiagnostics(exc)) from exc  # type: ignore[arg-type]
                raise
        return LoadResult(
            table=spec.name,
            is_fact=spec.is_fact,
            rows=staged.height,
            inserted=staged.height,
            updated=0,
            unchanged=0,
            table_rows=table_rows,
            seconds=time.perf_counter() - started,
            bulk=True,
        )

    def _use_bulk_path(self, conn: psycopg.Connection, spec: TableSpec, rows: int) -> bool:
        """Set-based FK validation pays when the new rows are many and at least a tenth of the table."""
        if not spec.foreign_keys or rows < self.bulk_load_min_rows:
            return False
        existing = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(spec.name))
        ).fetchone()
        return rows * 10 >= existing[0]  # type: ignore[index]

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
        columns = _idents(_REJECTED_COLUMNS)
        target = sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE)

        def run() -> int:
            with self.connect() as conn, conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE _stage_rejections (fact text, source_table text, source_id integer, "
                    "last_updated timestamp(3), column_name text, value text, reason text, source_row jsonb) "
                    "ON COMMIT DROP"
                )
                with conn.cursor().copy(
                    sql.SQL("COPY _stage_rejections ({}) FROM STDIN").format(columns)
                ) as copy:
                    for row in rejected.select(_REJECTED_COLUMNS[1:]).iter_rows():
                        copy.write_row((spec.name, *row))
                return conn.execute(
                    sql.SQL(
                        "INSERT INTO {target} ({cols}) SELECT {cols} FROM _stage_rejections "
                        "ON CONFLICT (fact, source_id, last_updated, column_name) DO UPDATE SET "
                        "value = excluded.value, reason = excluded.reason, source_row = excluded.source_row, "
                        "last_seen = now()"
                    ).format(target=target, cols=columns)
                ).rowcount

        return self._with_schema(run)

    def record_deletions(self, table: str, deletions: pl.DataFrame) -> int:
        """Store the deletions of a fact's source rows the lake observed (`DELETIONS_SCHEMA`);
        one seen before adds nothing. Returns the rows added."""
        spec = self._spec(table, fact=True)
        if deletions.is_empty():
            return 0
        target = sql.Identifier(DELETIONS_TABLE)

        def run() -> int:
            with self.connect() as conn, conn.transaction():
                conn.execute(
                    "CREATE TEMP TABLE _stage_deletions (source_id integer, last_updated timestamp(3), "
                    "observed_at timestamp(3)) ON COMMIT DROP"
                )
                with conn.cursor().copy("COPY _stage_deletions FROM STDIN") as copy:
                    for row in deletions.select(list(DELETIONS_SCHEMA)).iter_rows():
                        copy.write_row(row)
                return conn.execute(
                    sql.SQL(
                        "INSERT INTO {target} (fact, source_id, last_updated, observed_at) "
                        "SELECT %s, source_id, last_updated, observed_at FROM _stage_deletions "
                        "ON CONFLICT DO NOTHING"
                    ).format(target=target),
                    (spec.name,),
                ).rowcount

        return self._with_schema(run)

    def open_rejections(self, table: str, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
        """How many rejected versions of a fact are still open (not superseded by a loaded version
        of the same source row), and the first `limit` rejected values, oldest first."""
        spec = self._spec(table, fact=True)
        view = sql.Identifier(QUARANTINE_SCHEMA, OPEN_REJECTIONS_VIEW)

        def run() -> tuple[int, list[dict[str, Any]]]:
            with self.connect() as conn:
                count = conn.execute(
                    sql.SQL(
                        "SELECT count(DISTINCT (source_id, last_updated)) FROM {} WHERE fact = %s"
                    ).format(view),
                    (spec.name,),
                ).fetchone()[0]  # type: ignore[index]
                cur = conn.execute(
                    sql.SQL(
                        "SELECT source_table, source_id, last_updated, column_name, value, reason "
                        "FROM {} WHERE fact = %s ORDER BY last_updated, source_id, column_name LIMIT %s"
                    ).format(view),
                    (spec.name, limit),
                )
                names = [d.name for d in cur.description or []]
                return int(count), [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

        return self._with_schema(run)

    def rejected_unloaded_versions(self, table: str, first_day: str, last_day: str) -> int:
        """Rejected versions of a fact with `last_updated` in the days that the fact does not hold."""
        spec = self._spec(table, fact=True)
        natural_id, updated_date, updated_time, *_ = spec.natural_key
        query = sql.SQL(
            "SELECT count(DISTINCT (r.source_id, r.last_updated)) FROM {rejected} r "
            "WHERE r.fact = %(fact)s AND r.last_updated >= %(first_day)s::date "
            "AND r.last_updated < %(last_day)s::date + 1 AND NOT EXISTS (SELECT 1 FROM {fact} f "
            "WHERE f.{id} = r.source_id AND f.{d} = r.last_updated::date AND f.{t} = r.last_updated::time)"
        ).format(
            rejected=sql.Identifier(QUARANTINE_SCHEMA, REJECTED_TABLE),
            fact=sql.Identifier(spec.name),
            id=sql.Identifier(natural_id),
            d=sql.Identifier(updated_date),
            t=sql.Identifier(updated_time),
        )
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
        url = self.resolved_url()
        try:
            conn = adbc.connect(url)
        except adbc_driver_manager.Error as exc:
            raise connection_error(
                "the warehouse", ENV_WAREHOUSE_URL, url, exc, WarehouseConnectionError, WarehouseAccessError
            ) from None
        with conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetch_arrow_table()

    def scalar(
        self, query: sql.Composable | str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> Any:
        """The first column of the first row of `query` (None when it returns no row)."""

        def run() -> Any:
            with self.connect() as conn:
                row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
            return None if row is None else row[0]

        return self._with_schema(run)

    def fetch_one_dict(
        self, query: sql.Composable | str, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The first row of `query` as {column name: value} (empty when it returns no row)."""

        def run() -> dict[str, Any]:
            with self.connect() as conn:
                cur = conn.execute(query, params)  # type: ignore[arg-type]
                row = cur.fetchone()
                names = [d.name for d in cur.description or []]
            return {} if row is None else dict(zip(names, row, strict=True))

        return self._with_schema(run)

    def row_counts(self) -> dict[str, int]:
        """Rows in each of the 11 warehouse tables, in spec order."""
        query = sql.SQL(" UNION ALL ").join(
            sql.SQL("SELECT {name}, count(*) FROM {table}").format(
                name=sql.Literal(name), table=sql.Identifier(name)
            )
            for name in WAREHOUSE_TABLES
        )

        def run() -> dict[str, int]:
            with self.connect() as conn:
                return dict(conn.execute(query).fetchall())

        counts = self._with_schema(run)
        return {name: counts[name] for name in WAREHOUSE_TABLES}

    # -- helpers -------------------------------------------------------------------------------

    def _with_schema(self, work: Callable[[], _T]) -> _T:
        """`work()` after ensure_schema; once more after re-running the DDL if a relation is missing.

        The per-process schema cache goes stale when the warehouse database is dropped and
        recreated while this process runs (e.g. a reset of the embedded demo warehouse).
        """
        self.ensure_schema()
        try:
            return work()
        except (psycopg.errors.UndefinedTable, adbc_driver_manager.Error) as exc:
            if getattr(exc, "sqlstate", None) != "42P01":
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
