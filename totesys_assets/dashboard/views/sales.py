"""Streamlit page script of the Sales page; its content is `totesys_assets.dashboard.sales`."""

from totesys_assets.dashboard import sales, ui

ui.page("Sales", sales.render)
