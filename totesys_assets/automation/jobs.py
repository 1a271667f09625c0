"""Jobs the schedule and the change sensor launch."""

import dagster as dg

from totesys_assets.partitions import daily_partitions

raw_refresh_job = dg.define_asset_job(
    "raw_refresh",
    selection=dg.AssetSelection.groups("raw"),
    partitions_def=daily_partitions,
    description="Extract day partitions of the raw tables into the lake.",
)
