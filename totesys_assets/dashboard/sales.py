"""Sales: headline figures, revenue by month and currency, top designs and counterparties, where
the totes go (dim_location) and who sells them (sales staff and department)."""

import polars as pl
import streamlit as st

from totesys_assets.dashboard import charts, ui
from totesys_assets.dashboard import queries as q


def render(snap: q.Snapshot, f: q.Filters) -> None:
    per_currency = q.by_currency(snap, q.SALES, f)
    charts.metrics(charts.headline_cells(per_currency, q.SALES, "Current sales orders", "Units sold"))
    st.caption(ui.describe_filters(f))
    charts.table(per_currency, "sales_by_currency")

    st.subheader("Revenue by month and currency")
    st.caption(
        "Revenue = units sold × unit price, by the month of the order date. Currencies are never added up."
    )
    months = q.by_month(snap, q.SALES, f)
    charts.chart_with_numbers(charts.month_lines(months, "amount", "revenue"), months, "sales_by_month")

    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Top designs")
        designs = q.top_designs(snap, f)
        charts.chart(
            charts.hbar(charts.labelled(designs, "design_name", "design_id"), "label", "units", "units sold")
        )
        charts.table(designs, "sales_top_designs")
    with right:
        st.subheader("Top counterparties")
        customers = q.top_counterparties(snap, q.SALES, f)
        charts.chart(
            charts.hbar(
                charts.labelled(customers, "counterparty_legal_name", "counterparty_id"),
                "label",
                "units",
                "units sold",
            )
        )
        charts.table(customers, "sales_top_counterparties")

    st.subheader("Sales by delivery country and city")
    places = q.by_location(snap, q.SALES, f)
    countries = (
        places.group_by("country")
        .agg(pl.col("units").sum())
        .sort("units", "country", descending=[True, False])
    )
    charts.chart_with_numbers(
        charts.hbar(countries, "country", "units", "units sold"), places, "sales_by_location"
    )

    st.subheader("Sales by staff and department")
    staff = q.by_staff(snap, q.SALES, f)
    charts.chart_with_numbers(
        charts.hbar(
            charts.labelled(staff, "staff_name", "staff_id"),
            "label",
            "units",
            "units sold",
            color="department_name",
        ),
        staff,
        "sales_by_staff",
    )
