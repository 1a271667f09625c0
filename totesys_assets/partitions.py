"""The daily partitions shared by the raw assets and the facts."""

from __future__ import annotations

import dagster as dg

from totesys_assets.settings import partitions_start_date

# Keys are YYYY-MM-DD days of `last_updated` (UTC; the source stores naive timestamps).
# end_offset=1 includes the current, still-open day so it can be refreshed during the day.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=partitions_start_date(), end_offset=1, timezone="UTC", fmt="%Y-%m-%d"
)
