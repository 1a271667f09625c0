"""Formatting and chart building blocks of the dashboard's pages: money and compact numbers,
tables with column formats, Altair charts with their numbers beside them, headline metrics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import altair as alt
import polars as pl
import streamlit as st

from totesys_assets.dashboard import queries as q

CURRENCY_SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€"}
TABLE_HEIGHT = 360
Height = int | Literal["content", "stretch", "auto"]


def compact(number: float) -> str:
    """1234 -> "1,234"; 563625106 -> "563.63M" (metrics are narrow; the exact value is in the help)."""
    for limit, suffix in ((1e9, "bn"), (1e6, "M")):
        if abs(number) >= limit:
            return f"{number / limit:,.2f}{suffix}"
    return f"{number:,.0f}"


def money(code: str, value: Decimal | float | None) -> str:
    symbol = CURRENCY_SYMBOLS.get(code, f"{code} ")
    amount = float(value or 0)
    for limit, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if abs(amount) >= limit:
            return f"{symbol}{amount / limit:,.2f}{suffix}"
    return f"{symbol}{amount:,.2f}"


def column_formats(frame: pl.DataFrame) -> dict[str, Any]:
    """Table formats: money with thousands separators and two decimals, months as YYYY-MM."""
    config: dict[str, Any] = {}
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Decimal):
            config[name] = st.column_config.NumberColumn(name, format="accounting")
        elif name == "month" and dtype == pl.Date:
            config[name] = st.column_config.DateColumn(name, format="YYYY-MM")
        elif dtype == pl.Date:
            config[name] = st.column_config.DateColumn(name, format="YYYY-MM-DD")
        elif (
            dtype in (pl.Int64, pl.Int32)
            and not name.endswith("_id")
            and name not in ("version", "days_overdue")
        ):
            config[name] = st.column_config.NumberColumn(name, format="localized")
    return config


def table(frame: pl.DataFrame, key: str, height: Height | None = None) -> None:
    """The numbers, in a container keyed `key` (tests find a table by it: `at.get_by_key(key)`).

    Short tables take the height of their rows, long ones scroll.
    """
    if height is None:
        height = "content" if frame.height <= 12 else TABLE_HEIGHT
    with st.container(key=key):
        st.dataframe(frame, hide_index=True, height=height, column_config=column_formats(frame))


def chart_data(frame: pl.DataFrame) -> pl.DataFrame:
    """Vega-Lite wants plain numbers: exact decimals become floats for the chart only."""
    return frame.with_columns(
        pl.col(c).cast(pl.Float64) for c, t in frame.schema.items() if isinstance(t, pl.Decimal)
    )


def chart(spec: Any) -> None:
    st.altair_chart(spec, width="stretch")


def month_lines(frame: pl.DataFrame, value: str, title: str) -> alt.Chart:
    return (
        alt.Chart(chart_data(frame))
        .mark_line(point=True)
        .encode(
            x=alt.X("month:T", title="month", axis=alt.Axis(format="%b %Y")),
            y=alt.Y(f"{value}:Q", title=title),
            color=alt.Color("currency_code:N", title="currency"),
            tooltip=[
                alt.Tooltip("month:T", format="%B %Y"),
                "currency_code:N",
                "orders:Q",
                "units:Q",
                alt.Tooltip(f"{value}:Q", format=",.2f"),
            ],
        )  # fmt: skip
        .properties(height=320)
    )


def labelled(frame: pl.DataFrame, name: str, key: str) -> pl.DataFrame:
    """`frame` with a `label` column: the name, plus " #id" where two rows share a name (designs do)."""
    clash = pl.col(name).is_duplicated() | pl.col(name).is_null()
    return frame.with_columns(
        pl.when(clash)
        .then(pl.concat_str(pl.col(name).fill_null("?"), pl.lit(" #"), pl.col(key).cast(pl.String)))
        .otherwise(pl.col(name))
        .alias("label")
    )


def hbar(frame: pl.DataFrame, label: str, value: str, title: str, color: str | None = None) -> alt.Chart:
    """Horizontal bars of `value` per `label`, longest first, one bar per row."""
    data = chart_data(frame)
    encoding: dict[str, object] = dict(
        y=alt.Y(f"{label}:N", sort="-x", title=None, axis=alt.Axis(labelLimit=220, labelOverlap=False)),
        x=alt.X(f"{value}:Q", title=title),
        tooltip=[c for c in data.columns if not c.endswith("_id") and c != "label"],
    )
    if color:
        encoding["color"] = alt.Color(f"{color}:N", title=color.removesuffix("_name").replace("_", " "))
    return alt.Chart(data).mark_bar().encode(**encoding).properties(height=alt.Step(20))


def grouped_by_currency(frame: pl.DataFrame, label: str, title: str) -> alt.Chart:
    """Horizontal bars of each `amount <CUR>` column, one bar per currency (never summed across)."""
    amounts = [c for c in frame.columns if c.startswith("amount ")]
    long = (
        chart_data(frame.select(label, *amounts))
        .unpivot(index=label, on=amounts, variable_name="currency", value_name="amount")
        .with_columns(pl.col("currency").str.strip_prefix("amount "))
    )
    order = frame.get_column(label).to_list()
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y(f"{label}:N", sort=order, title=None, axis=alt.Axis(labelLimit=220, labelOverlap=False)),
            x=alt.X("amount:Q", title=title),
            color=alt.Color("currency:N"),
            yOffset="currency:N",
            tooltip=[label, "currency", alt.Tooltip("amount:Q", format=",.2f")],
        )
        .properties(height=alt.Step(8))
    )


def chart_with_numbers(spec: Any, frame: pl.DataFrame, key: str, height: Height | None = None) -> None:
    left, right = st.columns([3, 2], gap="medium")
    with left:
        chart(spec)
    with right:
        table(frame, key, height)


def headline_cells(
    per_currency: pl.DataFrame, kind: str, count_label: str, units_label: str | None
) -> list[tuple[str, str, str | None]]:
    """(label, value, exact value) of a star's headline metrics, from its per-currency table."""
    cells: list[tuple[str, str, str | None]] = [
        (count_label, f"{int(per_currency.get_column('count').sum()):,}", None)
    ]
    if units_label:
        units = int(per_currency.get_column("units").sum())
        cells.append((units_label, compact(units), f"{units:,}"))
    names = {q.SALES: {"amount": "Revenue"}, q.PURCHASES: {"amount": "Spend"}}.get(
        kind, {"paid": "Paid", "unpaid": "Unpaid"}
    )
    for column, name in names.items():
        for code, value in per_currency.select("currency_code", column).iter_rows():
            cells.append((f"{name} {code}", money(code, value), f"{code} {value:,}"))
    return cells


def metrics(cells: list[tuple[str, str, str | None]], per_row: int = 5) -> None:
    """Headline metrics, at most `per_row` to a row (wider would cut their values)."""
    for start in range(0, len(cells), per_row):
        row = cells[start : start + per_row]
        for column, (label, value, exact) in zip(st.columns(per_row), row, strict=False):
            column.metric(label, value, help=exact)
