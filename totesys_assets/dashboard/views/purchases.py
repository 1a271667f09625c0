"""Streamlit page script of the Purchases page; its content is `totesys_assets.dashboard.purchases`."""

from totesys_assets.dashboard import purchases, ui

ui.page("Purchases", purchases.render)
