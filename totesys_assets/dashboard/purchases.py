"""Purchases: spend (quantity × unit price) by month and currency, by supplier, by staff."""

import streamlit as st

from totesys_assets.dashboard import queries as q
from totesys_assets.dashboard import ui


def render(snap: q.Snapshot, f: q.Filters) -> None:
    per_currency = q.by_currency(snap, q.PURCHASES, f)
    ui.metrics(ui.headline_cells(per_currency, q.PURCHASES, "Current purchase orders", "Items bought"))
    st.caption(ui.describe_filters(f))
    ui.table(per_currency, "purchases_by_currency")

    st.subheader("Spend by month and currency")
    st.caption("Spend = item quantity × item unit price, by the month of the order date.")
    months = q.by_month(snap, q.PURCHASES, f)
    ui.chart_with_numbers(ui.month_lines(months, "amount", "spend"), months, "purchases_by_month")

    st.subheader("Spend by supplier")
    suppliers = q.top_counterparties(snap, q.PURCHASES, f, top=None)
    ui.chart_with_numbers(
        ui.grouped_by_currency(
            ui.labelled(suppliers, "counterparty_legal_name", "counterparty_id"), "label", "spend"
        ),
        suppliers,
        "purchases_by_supplier",
    )

    st.subheader("Spend by staff")
    staff = q.by_staff(snap, q.PURCHASES, f)
    ui.chart_with_numbers(
        ui.grouped_by_currency(ui.labelled(staff, "staff_name", "staff_id"), "label", "spend"),
        staff,
        "purchases_by_staff",
    )
