"""Purchases: spend (quantity × unit price) by month and currency, by supplier, by staff."""

import streamlit as st

from totesys_assets.dashboard import charts, ui
from totesys_assets.dashboard import queries as q


def render(snap: q.Snapshot, f: q.Filters) -> None:
    per_currency = q.by_currency(snap, q.PURCHASES, f)
    charts.metrics(
        charts.headline_cells(per_currency, q.PURCHASES, "Current purchase orders", "Items bought")
    )
    st.caption(ui.describe_filters(f))
    charts.table(per_currency, "purchases_by_currency")

    st.subheader("Spend by month and currency")
    st.caption("Spend = item quantity × item unit price, by the month of the order date.")
    months = q.by_month(snap, q.PURCHASES, f)
    charts.chart_with_numbers(charts.month_lines(months, "amount", "spend"), months, "purchases_by_month")

    st.subheader("Spend by supplier")
    suppliers = q.top_counterparties(snap, q.PURCHASES, f, top=None)
    charts.chart_with_numbers(
        charts.grouped_by_currency(
            charts.labelled(suppliers, "counterparty_legal_name", "counterparty_id"), "label", "spend"
        ),
        suppliers,
        "purchases_by_supplier",
    )

    st.subheader("Spend by staff")
    staff = q.by_staff(snap, q.PURCHASES, f)
    charts.chart_with_numbers(
        charts.grouped_by_currency(charts.labelled(staff, "staff_name", "staff_id"), "label", "spend"),
        staff,
        "purchases_by_staff",
    )
