"""The change sensor: source days that differ from the lake go to the warehouse in one run.

Each tick fingerprints the source (raw/detector.py) and compares with what the lake captured: the
last few days every tick, the whole history every TOTESYS_FULL_CHECK_S (10 minutes). When
the differing days lie within `CHAIN_MAX_DAYS` of each other, the tick requests one run over them
that materialises the changed raw tables, the dimensions that read them and the facts of those
days, in dependency order: a change reaches `fact_*` in one run instead of three. Changes spread
wider (an old in-place correction found alongside today's orders), or found before every dimension
was first loaded, are reported as observations of the source assets instead, and automation
re-captures them in order (raw/conditions.py, star/conditions.py).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from totesys_assets.partitions import daily_partitions, partition_tags
from totesys_assets.raw.assets import raw_asset_key
from totesys_assets.raw.detector import detect_changes, observations, source_version
from totesys_assets.resources.lake import Fingerprint, LakeResource
from totesys_assets.resources.source import TotesysSource
from totesys_assets.settings import full_check_s, sensor_interval_s
from totesys_assets.specs import SOURCE_TABLES
from totesys_assets.star.assets import dimension_assets, fact_assets

# A chain run covers every day between the first and last changed day; beyond a week apart, the
# days in between would be re-read for nothing.
CHAIN_MAX_DAYS = 7
CHAIN_TRIGGER = "source_change"
# Each tick compares today and the RECENT_DAYS before it (new rows, late-stamped and backdated
# versions land there); every TOTESYS_FULL_CHECK_S it compares the whole history (in-place changes
# to old rows, deletions, rows dated before the first partition).
RECENT_DAYS = 2
# A recent-days check scans each table (the source has no index on last_updated to use): on a
# large source it waits so that checking takes at most this share of the source's time.
CHECK_SHARE = 0.25
_STAR = [*dimension_assets, *fact_assets]

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def raw_capture_in_flight(instance: dg.DagsterInstance) -> bool:
    """True while a run that writes raw days is queued or running."""
    raw_keys = {raw_asset_key(t) for t in SOURCE_TABLES}
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=_IN_FLIGHT), limit=100):
        run = record.dagster_run
        if run.job_name == "raw_refresh" or raw_keys.intersection(run.asset_selection or ()):
            return True
    return False


def recent_start(today: date | None = None) -> str | None:
    """The first day a recent-days tick compares; None while the whole history is that short."""
    first = daily_partitions.get_first_partition_key()
    start = ((today or datetime.now(UTC).date()) - timedelta(days=RECENT_DAYS)).isoformat()
    assert first
    return start if start > first else None


def star_loaded(instance: dg.DagsterInstance) -> bool:
    """Every dimension loaded at least once, so a chain run's facts find the rows they reference.
    Before that (a first start) the history backfill orders dimensions before facts."""
    return all(
        instance.get_latest_materialization_event(key) is not None
        for ad in dimension_assets
        for key in ad.keys
    )


def chain_selection(tables: set[str]) -> list[dg.AssetKey]:
    """The changed tables' raw assets and every dimension or fact that reads one of them."""
    raw = {raw_asset_key(t) for t in tables}
    readers = {key for ad in _STAR for key in ad.keys if ad.asset_deps[key] & raw}
    return sorted(raw | readers, key=lambda k: k.to_user_string())


def chain_request(changed: dict[str, dict[str, Fingerprint]]) -> dg.RunRequest | None:
    """One run over the changed days, or None when they are too far apart for one run."""
    days = sorted({d for ds in changed.values() for d in ds})
    tables = {t for t, ds in changed.items() if ds}
    first, last = days[0], days[-1]
    if (date.fromisoformat(last) - date.fromisoformat(first)).days >= CHAIN_MAX_DAYS:
        return None
    versions = json.dumps({t: {d: source_version(fp) for d, fp in ds.items()} for t, ds in changed.items()})
    digest = hashlib.blake2b(versions.encode(), digest_size=8).hexdigest()
    return dg.RunRequest(
        run_key=f"{first}..{last}:{digest}",
        asset_selection=chain_selection(tables),
        partition_key=first if first == last else None,
        tags={**(partition_tags(first, last) if first != last else {}), "totesys/trigger": CHAIN_TRIGGER},
    )


@dg.sensor(
    name="source_change_sensor",
    minimum_interval_seconds=sensor_interval_s(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    target=dg.AssetSelection.groups("raw", "dimensions", "facts"),
    description=(
        "Fingerprints the source and requests one run that carries the days that differ from the "
        "lake through raw, the dimensions that read them and the facts of those days."
    ),
)
def source_fingerprint_sensor(context: dg.SensorEvaluationContext, source: TotesysSource, lake: LakeResource):
    # While a raw capture runs, the lake and its recorded fingerprints are changing under us: a day
    # compared mid-run would look changed and be captured twice. The next tick compares again.
    if raw_capture_in_flight(context.instance):
        return dg.SkipReason("a raw capture is running; comparing after it")
    now = datetime.now(UTC)
    state = json.loads(context.cursor) if context.cursor else {}
    full_at = state.get("full_at")
    full = full_at is None or now - datetime.fromisoformat(full_at) >= timedelta(seconds=full_check_s())
    since = None if full else recent_start()
    full = since is None
    last_s, last_at = state.get("check_s", 0.0), state.get("check_at")
    if (
        not full
        and last_at
        and (now - datetime.fromisoformat(last_at)).total_seconds() < last_s / CHECK_SHARE
    ):
        return dg.SkipReason(f"the last check took {last_s:.1f} s; the next one waits (CHECK_SHARE)")
    started = time.monotonic()
    changed = detect_changes(source, lake, since=since)
    check_s = time.monotonic() - started
    # Days never loaded belong to the history backfill (raw/conditions.py), not to change capture.
    latest = daily_partitions.get_last_partition_key()
    for table, days in changed.items():
        loaded = context.instance.get_materialized_partitions(raw_asset_key(table))
        changed[table] = {d: fp for d, fp in days.items() if d == latest or d in loaded}
    # The cursor holds the versions reported for the days that still differ, so a day whose
    # capture is running (or failed) is not reported again each tick; a new change to it is.
    reported: dict[str, str] = state.get("reported", {})
    current = {f"{t}/{d}": source_version(fp) for t, days in changed.items() for d, fp in days.items()}
    if since:  # days before the recent ones were not compared: keep what was reported of them
        current |= {k: v for k, v in reported.items() if k.split("/")[1] < since}
    new = {
        t: {d: fp for d, fp in days.items() if reported.get(f"{t}/{d}") != source_version(fp)}
        for t, days in changed.items()
    }
    new = {t: days for t, days in new.items() if days}
    state = {"reported": current, "full_at": now.isoformat() if full else full_at}
    # (the whole-history check has its own cadence; only a recent-days check paces the next one)
    state |= (
        {"check_at": last_at, "check_s": last_s}
        if full
        else {"check_at": now.isoformat(), "check_s": round(check_s, 3)}
    )
    context.update_cursor(json.dumps(state, sort_keys=True))
    if not new:
        checked = "the whole history" if full else f"the days from {since}"
        waiting = f"; {len(current)} day(s) reported earlier still differ" if current else ""
        return dg.SkipReason(f"no source day changed since the last tick (checked {checked}{waiting})")
    summary = ", ".join(f"{t}: {len(d)}" for t, d in sorted(new.items()))
    request = chain_request(new) if star_loaded(context.instance) else None
    if request is None:
        context.log.info(f"days that differ from the lake, for automation: {summary}")
        return dg.SensorResult(asset_events=observations(new))
    context.log.info(f"days that differ from the lake, in one run: {summary}")
    return dg.SensorResult(run_requests=[request])
