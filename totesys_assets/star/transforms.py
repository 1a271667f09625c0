"""Pure Polars transforms from raw lake frames to the 11 warehouse tables (REFERENCE.md rules).

Frame in, frame out, no I/O, no Python loop over rows. Inputs have the lake schema
(`SOURCE_TABLES[t].polars_schema`) and may hold several versions of a source row. Dimensions are
current state (the latest version of each row, `dimensions`); facts keep one row per version
(`facts`). Every output has exactly `WAREHOUSE_TABLES[name].insert_columns`, in order, with the
warehouse dtypes, sorted by its key, and has passed `validate_frame`.
"""

from totesys_assets.star.dimensions import (
    dim_counterparty,
    dim_currency,
    dim_date,
    dim_date_range,
    dim_date_range_from_sources,
    dim_design,
    dim_location,
    dim_payment_type,
    dim_staff,
    dim_transaction,
    source_date_columns,
)
from totesys_assets.star.facts import (
    REJECTED_SCHEMA,
    FactSplit,
    fact_deletions,
    fact_payment,
    fact_purchase_order,
    fact_sales_order,
    rejected_version_count,
    split_fact,
)
from totesys_assets.star.validation import TransformError, validate_frame
from totesys_assets.star.versions import latest_versions, with_capture

__all__ = [
    "REJECTED_SCHEMA",
    "FactSplit",
    "TransformError",
    "dim_counterparty",
    "dim_currency",
    "dim_date",
    "dim_date_range",
    "dim_date_range_from_sources",
    "dim_design",
    "dim_location",
    "dim_payment_type",
    "dim_staff",
    "dim_transaction",
    "fact_deletions",
    "fact_payment",
    "fact_purchase_order",
    "rejected_version_count",
    "fact_sales_order",
    "latest_versions",
    "source_date_columns",
    "split_fact",
    "validate_frame",
    "with_capture",
]
