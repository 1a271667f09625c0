"""The change sensor: asks the source for max(last_updated) per table and extracts what moved."""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from totesys_assets.automation.jobs import raw_refresh_job
from totesys_assets.raw.assets import raw_asset_key
from totesys_assets.resources.source import TotesysSource
from totesys_assets.settings import sensor_interval_s

MAX_DAYS_PER_TICK = 31


def changed_days(previous: datetime | None, current: datetime, today: date) -> list[str]:
    """Day partitions that can hold versions newer than `previous` (bounded, newest kept)."""
    first = previous.date() if previous else current.date()
    last = max(current.date(), first)
    days = []
    day = last
    while day >= first and len(days) < MAX_DAYS_PER_TICK:
        days.append(day.isoformat())
        day -= timedelta(days=1)
    return sorted(d for d in days if d <= today.isoformat())


def plan_runs(
    cursor: dict[str, str], maxima: dict[str, datetime | None], today: date
) -> tuple[list[dg.RunRequest], dict[str, str]]:
    """Run requests (one per changed day, only the changed tables) and the next cursor."""
    new_cursor = dict(cursor)
    tables_by_day: dict[str, list[str]] = {}
    for table, current in sorted(maxima.items()):
        if current is None:
            continue
        seen = cursor.get(table)
        previous = datetime.fromisoformat(seen) if seen else None
        if previous is not None and current <= previous:
            continue
        new_cursor[table] = current.isoformat()
        for day in changed_days(previous, current, today):
            tables_by_day.setdefault(day, []).append(table)
    requests = [
        dg.RunRequest(
            run_key=f"{day}:{','.join(tables)}:{max(new_cursor[t] for t in tables)}",
            partition_key=day,
            asset_selection=[raw_asset_key(t) for t in tables],
            tags={"totesys/trigger": "source_change", "totesys/tables": ",".join(tables)},
        )
        for day, tables in sorted(tables_by_day.items())
    ]
    return requests, new_cursor


@dg.sensor(
    job=raw_refresh_job,
    minimum_interval_seconds=sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Polls max(last_updated) of every source table and extracts the changed tables' days.",
)
def source_change_sensor(context: dg.SensorEvaluationContext, source: TotesysSource):
    cursor = json.loads(context.cursor) if context.cursor else {}
    maxima = source.max_last_updated()
    requests, new_cursor = plan_runs(cursor, maxima, datetime.now(UTC).date())
    context.update_cursor(json.dumps(new_cursor, sort_keys=True))
    if not requests:
        return dg.SkipReason("no source table changed since the last tick")
    return requests
