"""The dashboard: a Streamlit app over the warehouse's star schema (`totesys-dashboard`).

`queries` reads the warehouse (read-only, parameterised) and computes every number the pages show
as pure Polars functions; `app` and `views/` are the Streamlit UI; `cli` starts it.
"""
