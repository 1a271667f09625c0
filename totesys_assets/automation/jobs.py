"""Jobs the schedule and the change sensor launch."""

import dagster as dg

raw_refresh_job = dg.define_asset_job(
    "raw_refresh",
    selection=dg.AssetSelection.groups("raw"),
    description="Extract day partitions of the raw tables into the lake.",
)
