"""The Streamlit app (`totesys-dashboard` runs it): filters in the sidebar, one page per question.

The page scripts are in `views/`, their content in `sales`, `purchases`, `payments`, `history`; the
numbers come from `queries`. On an unreachable or empty warehouse the app explains what to run and
keeps checking, then fills in by itself.
"""

from totesys_assets.dashboard import ui

ui.app()
