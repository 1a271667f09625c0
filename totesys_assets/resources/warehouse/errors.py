"""The warehouse's errors, and PostgreSQL's diagnostics turned into messages that name table,
column and value (never the password of the warehouse URL)."""

from __future__ import annotations

import re
from typing import Any

import adbc_driver_manager
import adbc_driver_postgresql.dbapi as adbc
import polars as pl
import psycopg

from totesys_assets.resources.errors import ConfigurationFailure, connection_error
from totesys_assets.settings import ENV_WAREHOUSE_URL
from totesys_assets.specs import TableSpec


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


def connect_adbc(url: str) -> adbc.Connection:
    """An ADBC connection to the warehouse; a failure to connect becomes a warehouse error."""
    try:
        return adbc.connect(url)
    except adbc_driver_manager.Error as exc:
        raise connection_error(
            "the warehouse", ENV_WAREHOUSE_URL, url, exc, WarehouseConnectionError, WarehouseAccessError
        ) from None


class AdbcDiagnostics:
    """An ADBC error seen through psycopg's `Error.diag` interface, for `load_error`."""

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


def format_key(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


_KEY_DETAIL = re.compile(r"Key \((?P<cols>.+?)\)=\((?P<vals>.*)\)", re.S)
_COPY_CONTEXT = re.compile(r"column (?P<col>\w+): (?P<val>.*)")


def load_error(spec: TableSpec, frame: pl.DataFrame, exc: psycopg.Error) -> WarehouseLoadError:
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
            where = f" in the row {format_key({k: first[k] for k in key})}"
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
