"""Typed table specs: the one place that names every column, type and key.

Source (totesys OLTP) and warehouse (star schema) tables are both described here. DDL
(`totesys_assets.ddl`), the lake's Parquet schema, the Dagster column-schema metadata, the source
schema validation and the asset checks all derive from these objects; nothing else spells a
column list by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import dagster as dg
import polars as pl

from totesys_assets.column_notes import COLUMN_NOTES


class Kind(enum.Enum):
    """Logical column kinds, each with one PostgreSQL type and one Polars dtype."""

    INT = "int"
    SERIAL = "serial"
    TEXT = "text"
    MONEY = "money"
    TIMESTAMP = "timestamp"
    DATE = "date"
    TIME = "time"
    BOOL = "bool"
    DATE_TEXT = "date_text"  # a YYYY-MM-DD date stored as TEXT in the source
    ENUM = "enum"


PG_TYPES: dict[Kind, str] = {
    Kind.INT: "integer",
    Kind.SERIAL: "serial",
    Kind.TEXT: "text",
    Kind.MONEY: "numeric(10,2)",
    Kind.TIMESTAMP: "timestamp(3) without time zone",
    Kind.DATE: "date",
    Kind.TIME: "time(3) without time zone",
    Kind.BOOL: "boolean",
    Kind.DATE_TEXT: "text",
}

# information_schema.columns.data_type for each kind (used to validate a live source).
INFO_SCHEMA_TYPES: dict[Kind, str] = {
    Kind.INT: "integer",
    Kind.SERIAL: "integer",
    Kind.TEXT: "text",
    Kind.MONEY: "numeric",
    Kind.TIMESTAMP: "timestamp without time zone",
    Kind.DATE: "date",
    Kind.TIME: "time without time zone",
    Kind.BOOL: "boolean",
    Kind.DATE_TEXT: "text",
    Kind.ENUM: "USER-DEFINED",
}

MONEY_DTYPE = pl.Decimal(10, 2)
TIMESTAMP_DTYPE = pl.Datetime("ms")

POLARS_TYPES: dict[Kind, pl.DataType] = {
    Kind.INT: pl.Int32(),
    Kind.SERIAL: pl.Int32(),
    Kind.TEXT: pl.String(),
    Kind.MONEY: MONEY_DTYPE,
    Kind.TIMESTAMP: TIMESTAMP_DTYPE,
    Kind.DATE: pl.Date(),
    Kind.TIME: pl.Time(),
    Kind.BOOL: pl.Boolean(),
    Kind.DATE_TEXT: pl.String(),
    Kind.ENUM: pl.String(),
}

# PostgreSQL enum types of the source, in declaration order.
ENUMS: dict[str, tuple[str, ...]] = {
    "PaymentTypeName": ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"),
    "TransactionType": ("SALE", "PURCHASE"),
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool = False
    references: str | None = None  # "table.column"
    unique: bool = False
    pg_type_override: str | None = None  # e.g. varchar(3)
    enum_type: str | None = None  # name of a key in ENUMS (Kind.ENUM only)
    default: str | None = None  # SQL default expression (DDL only)
    on_delete: str = "RESTRICT"  # FK action in the source schema

    @property
    def pg_type(self) -> str:
        if self.pg_type_override:
            return self.pg_type_override
        if self.kind is Kind.ENUM:
            assert self.enum_type, f"enum column {self.name} needs enum_type"
            return f'"{self.enum_type}"'
        return PG_TYPES[self.kind]

    @property
    def info_schema_type(self) -> str:
        if self.pg_type_override and self.pg_type_override.startswith("varchar"):
            return "character varying"
        return INFO_SCHEMA_TYPES[self.kind]

    @property
    def dtype(self) -> pl.DataType:
        return POLARS_TYPES[self.kind]


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    primary_key: str
    description: str = ""
    # Facts only: the natural key of one version of a source row; unique in the warehouse.
    natural_key: tuple[str, ...] = ()
    # Warehouse only: the source table a fact is built from and the column holding its id.
    source_table: str | None = None

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        assert len(names) == len(set(names)), f"duplicate column in {self.name}"
        assert self.primary_key in names, f"{self.name}: primary key {self.primary_key} not a column"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def polars_schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def not_null_columns(self) -> list[str]:
        return [c.name for c in self.columns if not c.nullable]

    @property
    def foreign_keys(self) -> list[Column]:
        return [c for c in self.columns if c.references]

    @property
    def is_fact(self) -> bool:
        return bool(self.natural_key)

    @property
    def insert_columns(self) -> list[str]:
        """Columns a load supplies (serial surrogate keys are assigned by the database)."""
        return [c.name for c in self.columns if c.kind is not Kind.SERIAL]

    def empty_frame(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.polars_schema)

    def table_schema(self) -> dg.TableSchema:
        """The Dagster column schema (shown in the UI's Definition tab and as dagster/column_schema)."""
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.pg_type.strip('"'),
                    description=COLUMN_NOTES.get(c.name),
                    constraints=dg.TableColumnConstraints(
                        nullable=c.nullable,
                        unique=c.unique or c.name == self.primary_key,
                        other=[f"references {c.references}"] if c.references else [],
                    ),
                )
                for c in self.columns
            ],
            constraints=dg.TableConstraints(
                other=[f"primary key ({self.primary_key})"]
                + ([f"unique ({', '.join(self.natural_key)})"] if self.natural_key else [])
            ),
        )


def _ts_cols() -> tuple[Column, Column]:
    return (
        Column("created_at", Kind.TIMESTAMP, default="CURRENT_TIMESTAMP"),
        Column("last_updated", Kind.TIMESTAMP),
    )


CREATED_AT, LAST_UPDATED = _ts_cols()


def _id(name: str) -> Column:
    return Column(name, Kind.INT, default=f"nextval('{_seq_name_for_id(name)}'::regclass)")


def _seq_name_for_id(column: str) -> str:
    table = column.removesuffix("_id")
    return f"{table}_{column}_seq"


# ---------------------------------------------------------------------------------------------
# Source: the 11 totesys tables, column order as in the real schema dump (schema/schema.sql).
# ---------------------------------------------------------------------------------------------

SOURCE_TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        TableSpec(
            "address",
            (
                _id("address_id"),
                Column("address_line_1", Kind.TEXT),
                Column("address_line_2", Kind.TEXT, nullable=True),
                Column("district", Kind.TEXT, nullable=True),
                Column("city", Kind.TEXT),
                Column("postal_code", Kind.TEXT),
                Column("country", Kind.TEXT),
                Column("phone", Kind.TEXT),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="address_id",
            description="Addresses of counterparties and delivery locations.",
        ),
        TableSpec(
            "counterparty",
            (
                _id("counterparty_id"),
                Column("counterparty_legal_name", Kind.TEXT),
                Column("legal_address_id", Kind.INT, references="address.address_id"),
                Column("commercial_contact", Kind.TEXT, nullable=True),
                Column("delivery_contact", Kind.TEXT, nullable=True),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="counterparty_id",
            description="Customers and suppliers.",
        ),
        TableSpec(
            "currency",
            (
                _id("currency_id"),
                Column("currency_code", Kind.TEXT, pg_type_override="varchar(3)"),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="currency_id",
            description="ISO 4217 currency codes in use.",
        ),
        TableSpec(
            "department",
            (
                _id("department_id"),
                Column("department_name", Kind.TEXT),
                Column("location", Kind.TEXT, nullable=True),
                Column("manager", Kind.TEXT, nullable=True),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="department_id",
            description="Departments of Terrific Totes.",
        ),
        TableSpec(
            "design",
            (
                _id("design_id"),
                CREATED_AT,
                Column("design_name", Kind.TEXT),
                Column("file_location", Kind.TEXT),
                Column("file_name", Kind.TEXT),
                LAST_UPDATED,
            ),
            primary_key="design_id",
            description="Tote bag designs.",
        ),
        TableSpec(
            "payment",
            (
                _id("payment_id"),
                CREATED_AT,
                LAST_UPDATED,
                Column("transaction_id", Kind.INT, references="transaction.transaction_id", unique=True),
                Column("counterparty_id", Kind.INT, references="counterparty.counterparty_id"),
                Column("payment_amount", Kind.MONEY),
                Column("currency_id", Kind.INT, references="currency.currency_id"),
                Column("payment_type_id", Kind.INT, references="payment_type.payment_type_id"),
                Column("paid", Kind.BOOL),
                Column("payment_date", Kind.DATE_TEXT),
                Column("company_ac_number", Kind.INT),
                Column("counterparty_ac_number", Kind.INT),
            ),
            primary_key="payment_id",
            description="One payment per transaction; `paid` flips to true on the payment date.",
        ),
        TableSpec(
            "payment_type",
            (
                _id("payment_type_id"),
                Column("payment_type_name", Kind.ENUM, enum_type="PaymentTypeName"),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="payment_type_id",
            description="Receipt, refund and payment kinds.",
        ),
        TableSpec(
            "purchase_order",
            (
                _id("purchase_order_id"),
                CREATED_AT,
                LAST_UPDATED,
                Column("staff_id", Kind.INT, references="staff.staff_id"),
                Column("counterparty_id", Kind.INT, references="counterparty.counterparty_id"),
                Column("item_code", Kind.TEXT),
                Column("item_quantity", Kind.INT),
                Column("item_unit_price", Kind.MONEY),
                Column("currency_id", Kind.INT, references="currency.currency_id"),
                Column("agreed_delivery_date", Kind.DATE_TEXT),
                Column("agreed_payment_date", Kind.DATE_TEXT),
                Column("agreed_delivery_location_id", Kind.INT, references="address.address_id"),
            ),
            primary_key="purchase_order_id",
            description="Purchases of stock from suppliers.",
        ),
        TableSpec(
            "sales_order",
            (
                _id("sales_order_id"),
                CREATED_AT,
                LAST_UPDATED,
                Column("design_id", Kind.INT, references="design.design_id"),
                Column("staff_id", Kind.INT, references="staff.staff_id"),
                Column("counterparty_id", Kind.INT, references="counterparty.counterparty_id"),
                Column("units_sold", Kind.INT),
                Column("unit_price", Kind.MONEY),
                Column("currency_id", Kind.INT, references="currency.currency_id"),
                Column("agreed_delivery_date", Kind.DATE_TEXT),
                Column("agreed_payment_date", Kind.DATE_TEXT),
                Column("agreed_delivery_location_id", Kind.INT, references="address.address_id"),
            ),
            primary_key="sales_order_id",
            description="Sales of totes to customers.",
        ),
        TableSpec(
            "staff",
            (
                _id("staff_id"),
                Column("first_name", Kind.TEXT),
                Column("last_name", Kind.TEXT),
                Column("department_id", Kind.INT, references="department.department_id"),
                Column("email_address", Kind.TEXT),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="staff_id",
            description="Employees.",
        ),
        TableSpec(
            "transaction",
            (
                _id("transaction_id"),
                Column("transaction_type", Kind.ENUM, enum_type="TransactionType"),
                Column(
                    "sales_order_id",
                    Kind.INT,
                    nullable=True,
                    unique=True,
                    references="sales_order.sales_order_id",
                    on_delete="SET NULL",
                ),
                Column(
                    "purchase_order_id",
                    Kind.INT,
                    nullable=True,
                    unique=True,
                    references="purchase_order.purchase_order_id",
                    on_delete="SET NULL",
                ),
                CREATED_AT,
                LAST_UPDATED,
            ),
            primary_key="transaction_id",
            description="One transaction per sales or purchase order.",
        ),
    ]
}

SOURCE_TABLE_NAMES: list[str] = list(SOURCE_TABLES)


# ---------------------------------------------------------------------------------------------
# Warehouse: the three star schemas (REFERENCE.md "Warehouse schema").
# ---------------------------------------------------------------------------------------------


def _dim(name: str, cols: tuple[Column, ...], description: str) -> TableSpec:
    return TableSpec(name, cols, primary_key=cols[0].name, description=description)


def _capture_cols() -> tuple[Column, ...]:
    """Which captured version of the source row a fact row is: the source's hash of the row's
    content (an in-place change keeps last_updated but not this) and when the lake captured it.
    Last, so that a warehouse migrated by ALTER TABLE ADD COLUMN has the same column order."""
    return (Column("version_hash", Kind.TEXT), Column("captured_at", Kind.TIMESTAMP))


def _version_cols() -> tuple[Column, ...]:
    return (
        Column("created_date", Kind.DATE, references="dim_date.date_id"),
        Column("created_time", Kind.TIME),
        Column("last_updated_date", Kind.DATE, references="dim_date.date_id"),
        Column("last_updated_time", Kind.TIME),
    )


_T = Kind.TEXT
_I = Kind.INT

WAREHOUSE_TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in [
        _dim(
            "dim_date",
            (
                Column("date_id", Kind.DATE),
                Column("year", _I),
                Column("month", _I),
                Column("day", _I),
                Column("day_of_week", _I),
                Column("day_name", _T),
                Column("month_name", _T),
                Column("quarter", _I),
            ),
            "Calendar: one row per day, ISO day_of_week (Monday=1).",
        ),
        _dim(
            "dim_staff",
            (
                Column("staff_id", _I),
                Column("first_name", _T),
                Column("last_name", _T),
                Column("department_name", _T),
                Column("location", _T),
                Column("email_address", _T),
            ),
            "Staff with their department's name and location.",
        ),
        _dim(
            "dim_location",
            (
                Column("location_id", _I),
                Column("address_line_1", _T),
                Column("address_line_2", _T, nullable=True),
                Column("district", _T, nullable=True),
                Column("city", _T),
                Column("postal_code", _T),
                Column("country", _T),
                Column("phone", _T),
            ),
            "Every address (delivery locations).",
        ),
        _dim(
            "dim_design",
            (
                Column("design_id", _I),
                Column("design_name", _T),
                Column("file_location", _T),
                Column("file_name", _T),
            ),
            "Tote designs.",
        ),
        _dim(
            "dim_currency",
            (
                Column("currency_id", _I),
                Column("currency_code", _T),
                Column("currency_name", _T),
            ),
            "Currencies with ISO 4217 names.",
        ),
        _dim(
            "dim_counterparty",
            (
                Column("counterparty_id", _I),
                Column("counterparty_legal_name", _T),
                Column("counterparty_legal_address_line_1", _T),
                Column("counterparty_legal_address_line_2", _T, nullable=True),
                Column("counterparty_legal_district", _T, nullable=True),
                Column("counterparty_legal_city", _T),
                Column("counterparty_legal_postal_code", _T),
                Column("counterparty_legal_country", _T),
                Column("counterparty_legal_phone_number", _T),
            ),
            "Counterparties with their legal address.",
        ),
        _dim(
            "dim_payment_type",
            (Column("payment_type_id", _I), Column("payment_type_name", _T)),
            "Payment types.",
        ),
        _dim(
            "dim_transaction",
            (
                Column("transaction_id", _I),
                Column("transaction_type", _T),
                Column("sales_order_id", _I, nullable=True),
                Column("purchase_order_id", _I, nullable=True),
            ),
            "Transactions with their (nullable) order ids.",
        ),
        TableSpec(
            "fact_sales_order",
            (
                Column("sales_record_id", Kind.SERIAL),
                Column("sales_order_id", _I),
                *_version_cols(),
                Column("sales_staff_id", _I, references="dim_staff.staff_id"),
                Column("counterparty_id", _I, references="dim_counterparty.counterparty_id"),
                Column("units_sold", _I),
                Column("unit_price", Kind.MONEY),
                Column("currency_id", _I, references="dim_currency.currency_id"),
                Column("design_id", _I, references="dim_design.design_id"),
                Column("agreed_payment_date", Kind.DATE, references="dim_date.date_id"),
                Column("agreed_delivery_date", Kind.DATE, references="dim_date.date_id"),
                Column("agreed_delivery_location_id", _I, references="dim_location.location_id"),
                *_capture_cols(),
            ),
            primary_key="sales_record_id",
            natural_key=("sales_order_id", "last_updated_date", "last_updated_time", "version_hash"),
            source_table="sales_order",
            description="One row per version of a sales order.",
        ),
        TableSpec(
            "fact_purchase_order",
            (
                Column("purchase_record_id", Kind.SERIAL),
                Column("purchase_order_id", _I),
                *_version_cols(),
                Column("staff_id", _I, references="dim_staff.staff_id"),
                Column("counterparty_id", _I, references="dim_counterparty.counterparty_id"),
                Column("item_code", _T),
                Column("item_quantity", _I),
                Column("item_unit_price", Kind.MONEY),
                Column("currency_id", _I, references="dim_currency.currency_id"),
                Column("agreed_delivery_date", Kind.DATE, references="dim_date.date_id"),
                Column("agreed_payment_date", Kind.DATE, references="dim_date.date_id"),
                Column("agreed_delivery_location_id", _I, references="dim_location.location_id"),
                *_capture_cols(),
            ),
            primary_key="purchase_record_id",
            natural_key=("purchase_order_id", "last_updated_date", "last_updated_time", "version_hash"),
            source_table="purchase_order",
            description="One row per version of a purchase order.",
        ),
        TableSpec(
            "fact_payment",
            (
                Column("payment_record_id", Kind.SERIAL),
                Column("payment_id", _I),
                *_version_cols(),
                Column("transaction_id", _I, references="dim_transaction.transaction_id"),
                Column("counterparty_id", _I, references="dim_counterparty.counterparty_id"),
                Column("payment_amount", Kind.MONEY),
                Column("currency_id", _I, references="dim_currency.currency_id"),
                Column("payment_type_id", _I, references="dim_payment_type.payment_type_id"),
                Column("paid", Kind.BOOL),
                Column("payment_date", Kind.DATE, references="dim_date.date_id"),
                *_capture_cols(),
            ),
            primary_key="payment_record_id",
            natural_key=("payment_id", "last_updated_date", "last_updated_time", "version_hash"),
            source_table="payment",
            description="One row per version of a payment.",
        ),
    ]
}

DIMENSION_NAMES: list[str] = [n for n, t in WAREHOUSE_TABLES.items() if not t.is_fact]
FACT_NAMES: list[str] = [n for n, t in WAREHOUSE_TABLES.items() if t.is_fact]

# Fixed ISO 4217 names: never looked up at run time.
CURRENCY_NAMES: dict[str, str] = {"GBP": "Pound Sterling", "USD": "US Dollar", "EUR": "Euro"}
