"""The sidebar's filters and the numbers behind every chart: pure functions of a `Snapshot` in
Polars. Filter values never become SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, cast

import polars as pl

from totesys_assets.dashboard.snapshot import Snapshot, memoized, utc_now
from totesys_assets.dashboard.warehouse_sql import FACT_SOURCES, KINDS, PAYMENTS, SALES

OVERDUE_ROWS = 1000  # rows of the overdue table sent to the browser (the count covers all of them)


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
