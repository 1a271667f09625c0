"""Payments: paid vs unpaid amounts by month and payment type, and the overdue payments."""

import altair as alt
import polars as pl
import streamlit as st

from totesys_assets.dashboard import charts, ui
from totesys_assets.dashboard import queries as q


def render(snap: q.Snapshot, f: q.Filters) -> None:
    today = q.utc_now().date()
    per_currency = q.by_currency(snap, q.PAYMENTS, f)
    overdue_count = q.overdue_count(snap, f, today)
    count, *amounts = charts.headline_cells(per_currency, q.PAYMENTS, "Current payments", None)
    charts.metrics([count, ("Overdue payments", f"{overdue_count:,}", None), *amounts])
    st.caption(ui.describe_filters(f) + " (delivery countries do not apply to payments)")
    charts.table(per_currency, "payments_by_currency")

    st.subheader("Paid and unpaid by month and payment type")
    st.caption(
        "By the month of the payment date. One currency per chart: amounts in different currencies are never added."
    )
    months = q.payments_by_month(snap, f)
    codes = months.get_column("currency_code").unique().sort().to_list()
    if codes:
        code = st.radio("Chart currency", codes, horizontal=True, key="payments_chart_currency")
        data = charts.chart_data(months.filter(pl.col("currency_code") == code))
        spec = (
            alt.Chart(data)
            .mark_bar()
            .encode(
                x=alt.X("yearmonth(month):T", title="month"),
                y=alt.Y("sum(amount):Q", title=f"amount ({code})"),
                color=alt.Color(
                    "status:N", scale=alt.Scale(domain=["paid", "unpaid"], range=["#2e7d32", "#ef6c00"])
                ),
                tooltip=[
                    alt.Tooltip("yearmonth(month):T", title="month"), "payment_type_name:N", "status:N",
                    alt.Tooltip("sum(payments):Q", title="payments"),
                    alt.Tooltip("sum(amount):Q", title="amount", format=",.2f"),
                ],
            )
            .properties(height=110, width=520)
            .facet(row=alt.Row("payment_type_name:N", title=None))
        )  # fmt: skip
        charts.chart_with_numbers(spec, months, "payments_by_month", height=560)

    st.subheader("Overdue payments")
    sort = st.selectbox("Order", list(q.OVERDUE_SORTS), key="overdue_sort")
    overdue, totals = q.overdue_table(snap, f, today, sort=sort)
    shown = (
        f"The table shows the first {q.OVERDUE_ROWS:,} in this order; "
        if overdue_count > q.OVERDUE_ROWS
        else ""
    )
    st.caption(
        f"Not paid and the payment date is before today ({today}, UTC): **{overdue_count:,}** payments. "
        f"{shown}click a column header to sort."
    )
    charts.table(totals, "payments_overdue_totals")
    charts.table(overdue, "payments_overdue", height=420)
