"""The dimension transforms: the current state (latest version) of each source row, joined and
renamed into the star schema's dimensions, and the calendar of `dim_date`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl
import polars.selectors as cs

from totesys_assets.specs import CURRENCY_NAMES, SOURCE_TABLES, Kind
from totesys_assets.star.validation import TransformError
from totesys_assets.star.versions import ISO_DATE_FORMAT, LAST_UPDATED, finish, join_required, latest_versions

DIM_DATE_EARLIEST = date(2022, 11, 1)
DIM_DATE_LOOKAHEAD = timedelta(days=365)


def dim_staff(staff: pl.DataFrame, department: pl.DataFrame) -> pl.DataFrame:
    """Staff with their department's name and location (the manager is not part of the star)."""
    departments = latest_versions(department, "department").select(
        "department_id", "department_name", "location"
    )
    joined = join_required(
        "dim_staff", latest_versions(staff, "staff"), "staff", departments, "department_id", "department_id"
    )
    return finish("dim_staff", joined)


def dim_location(address: pl.DataFrame) -> pl.DataFrame:
    """Every address is a potential delivery location."""
    return finish("dim_location", latest_versions(address, "address").rename({"address_id": "location_id"}))


def dim_design(design: pl.DataFrame) -> pl.DataFrame:
    return finish("dim_design", latest_versions(design, "design"))


def dim_currency(currency: pl.DataFrame) -> pl.DataFrame:
    """Currencies named from the fixed ISO 4217 mapping (never looked up at run time)."""
    rows = latest_versions(currency, "currency")
    unknown = ~pl.col("currency_code").is_in(list(CURRENCY_NAMES))
    if rows.select(unknown.any()).item():
        first = rows.filter(unknown).row(0, named=True)
        raise TransformError(
            f"dim_currency.currency_code: unknown currency code {first['currency_code']!r} "
            f"(currency_id={first['currency_id']}); known codes are {', '.join(sorted(CURRENCY_NAMES))} "
            "— add its ISO 4217 name to specs.CURRENCY_NAMES"
        )
    named = rows.with_columns(currency_name=pl.col("currency_code").replace_strict(CURRENCY_NAMES))
    return finish("dim_currency", named)


# address column -> dim_counterparty column; derived from the source spec, phone is the exception.
_LEGAL_ADDRESS_COLUMNS = {
    c: "counterparty_legal_phone_number" if c == "phone" else f"counterparty_legal_{c}"
    for c in SOURCE_TABLES["address"].column_names
    if c not in ("address_id", "created_at", LAST_UPDATED)
}


def dim_counterparty(counterparty: pl.DataFrame, address: pl.DataFrame) -> pl.DataFrame:
    """Counterparties with their legal address flattened in (contacts are not part of the star)."""
    legal_addresses = latest_versions(address, "address").select(
        "address_id", *(pl.col(src).alias(dst) for src, dst in _LEGAL_ADDRESS_COLUMNS.items())
    )
    joined = join_required(
        "dim_counterparty",
        latest_versions(counterparty, "counterparty"),
        "counterparty",
        legal_addresses,
        "legal_address_id",
        "address_id",
    )
    return finish("dim_counterparty", joined)


def dim_payment_type(payment_type: pl.DataFrame) -> pl.DataFrame:
    return finish("dim_payment_type", latest_versions(payment_type, "payment_type"))


def dim_transaction(transaction: pl.DataFrame) -> pl.DataFrame:
    """Transactions; exactly one of the order ids is set, the other stays NULL."""
    return finish("dim_transaction", latest_versions(transaction, "transaction"))


def dim_date(start: date, end: date) -> pl.DataFrame:
    """One row per day from `start` to `end` inclusive; ISO weekdays (Monday=1), English names."""
    if start > end:
        raise TransformError(f"dim_date: start {start} is after end {end}")
    day = pl.col("date_id")
    calendar = pl.DataFrame({"date_id": pl.date_range(start, end, "1d", eager=True)}).with_columns(
        year=day.dt.year(),
        month=day.dt.month(),
        day=day.dt.day(),
        day_of_week=day.dt.weekday(),
        day_name=day.dt.strftime("%A"),
        month_name=day.dt.strftime("%B"),
        quarter=(day.dt.month() - 1) // 3 + 1,
    )
    return finish("dim_date", calendar)


def dim_date_range(fact_frames: Iterable[pl.DataFrame], today: date) -> tuple[date, date]:
    """(start, end) for `dim_date`: every date a fact references, 2022-11-01 on, a year ahead of today.

    Facts reference dim_date by foreign key, so the calendar must cover all their date columns.
    """
    start, end = DIM_DATE_EARLIEST, today + DIM_DATE_LOOKAHEAD
    for frame in fact_frames:
        dates = frame.select(cs.date())
        if dates.width == 0:
            continue
        lows = [d for d in dates.min().row(0) if d is not None]
        highs = [d for d in dates.max().row(0) if d is not None]
        start, end = min([start, *lows]), max([end, *highs])
    return start, end


def source_date_columns(table: str) -> list[str]:
    """The raw columns a fact's dates come from: its timestamps and its YYYY-MM-DD text dates."""
    return [c.name for c in SOURCE_TABLES[table].columns if c.kind in (Kind.TIMESTAMP, Kind.DATE_TEXT)]


def dim_date_range_from_sources(raw: Iterable[tuple[str, pl.DataFrame]], today: date) -> tuple[date, date]:
    """`dim_date_range` of the facts built from these raw frames, without building the facts.

    Reads only the date columns (`source_date_columns`). Covers every date those facts reference:
    a fact keeps a subset of the row versions and takes its dates from exactly these columns.
    A text date that does not parse is skipped here; the fact transform rejects it with its row.
    """

    def dates(table: str, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select(
            pl.col(c.name).str.to_date(ISO_DATE_FORMAT, strict=False)
            if c.kind is Kind.DATE_TEXT
            else pl.col(c.name).dt.date()
            for c in SOURCE_TABLES[table].columns
            if c.name in source_date_columns(table)
        )

    return dim_date_range((dates(table, frame) for table, frame in raw), today)
