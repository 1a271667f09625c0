"""Streamlit page script of the Payments page; its content is `totesys_assets.dashboard.payments`."""

from totesys_assets.dashboard import payments, ui

ui.page("Payments", payments.render)
