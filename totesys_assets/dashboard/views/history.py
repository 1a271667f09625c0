"""Streamlit page script of the History page; its content is `totesys_assets.dashboard.history`."""

from totesys_assets.dashboard import history, ui

ui.page("History", history.render)
