"""Change detection by per-day fingerprints: which raw days differ from what the lake captured.

A fingerprint of a source table's day is its row count and the sum of its rows' content hashes,
grouped by the day of `last_updated` (days before the first partition count as the first, days
after today as today), computed inside the source by one read-only aggregate query per table.
The raw step records the fingerprint of every day it captured, read in the same snapshot as its
extract (`LakeResource.record_fingerprints`). A day whose source fingerprint differs from the
recorded one holds something the lake has not captured: a new row, an update, an in-place change
that left `last_updated` alone, or a deletion.

The differing days are reported as observations of the observable source assets `totesys/<table>`
(data version = the source fingerprint); the raw assets' automation condition requests a raw day
when its source day's data version changes (raw/conditions.py). Observing the source assets (UI,
or the `check_source_history` job) reports them on demand; the change sensor
(automation/change_sensor.py) compares every tick and requests the runs itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from datetime import datetime

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from totesys_assets.partitions import daily_partitions
from totesys_assets.resources.lake import Fingerprint, LakeResource
from totesys_assets.resources.source import TotesysSource
from totesys_assets.specs import SOURCE_TABLES

SOURCE_GROUP = "source"


def source_asset_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["totesys", table])


def source_version(fp: Fingerprint) -> str:
    return f"{fp.rows}:{fp.hash}"


def partition_bounds() -> tuple[str, str]:
    first, last = daily_partitions.get_first_partition_key(), daily_partitions.get_last_partition_key()
    assert first and last, "the daily partitions have no keys yet"
    return first, last


def differing_days(
    source: dict[str, tuple[int, str]], recorded: dict[str, Fingerprint]
) -> dict[str, Fingerprint]:
    """The days (with their source fingerprint) whose source fingerprint is not the one the lake
    recorded: a day the source holds that the lake never captured, or one that changed, or one the
    source emptied (every row deleted or moved away)."""
    out: dict[str, Fingerprint] = {}
    for day in sorted(set(source) | set(recorded)):
        fp = Fingerprint(*source[day]) if day in source else Fingerprint(0, "0")
        if not fp.same_rows(recorded.get(day)):
            out[day] = fp
    return out


def detect_changes(
    source: TotesysSource,
    lake: LakeResource,
    tables: Iterable[str] = SOURCE_TABLES,
    since: str | None = None,
) -> dict[str, dict[str, Fingerprint]]:
    """table -> the days that differ from the lake (one aggregate query per table), over the whole
    history or, with `since` (a day after the first partition), over the days from it on."""
    first, last = partition_bounds()
    assert since is None or since > first, "the first partition also holds the days before it"
    tables = list(tables)
    start = datetime.fromisoformat(since) if since else None
    by_table = source.fingerprints([SOURCE_TABLES[t] for t in tables], first, last, start)
    out = {}
    for t in tables:
        recorded = lake.read_fingerprints(t)
        if since:
            recorded = {d: fp for d, fp in recorded.items() if d >= since}
        out[t] = differing_days(by_table[t], recorded)
    return out


def _observable(table: str) -> dg.SourceAsset:
    @dg.observable_source_asset(
        key=source_asset_key(table),
        group_name=SOURCE_GROUP,
        partitions_def=daily_partitions,
        description=(
            f"The `{table}` table of the totesys source, per day of last_updated. Observing it "
            "reports the days whose fingerprint (rows, content hash) differs from what the lake "
            "captured; raw automation then re-captures exactly those days."
        ),
        # Observing reads the source and the lake's recorded fingerprints.
        required_resource_keys={"source", "lake"},
    )
    def _observe(context) -> dg.DataVersionsByPartition:
        changed = detect_changes(context.resources.source, context.resources.lake, [table])[table]
        context.log.info(f"{table}: {len(changed)} day(s) differ from the lake")
        return dg.DataVersionsByPartition(
            {d: dg.DataVersion(source_version(fp)) for d, fp in changed.items()}
        )

    return _observe


with warnings.catch_warnings():  # partitioned observable sources are beta in Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    source_assets: list[dg.SourceAsset] = [_observable(t) for t in SOURCE_TABLES]

check_source_history_job = dg.define_asset_job(
    "check_source_history",
    selection=dg.AssetSelection.assets(*(source_asset_key(t) for t in SOURCE_TABLES)),
    description=(
        "Check the whole history now: fingerprint every day of every source table and report the "
        "days that differ from the lake (raw automation re-captures them)."
    ),
)


def observations(changed: dict[str, dict[str, Fingerprint]]) -> list[dg.AssetObservation]:
    """One observation per differing day, with the source fingerprint as its data version."""
    return [
        dg.AssetObservation(
            asset_key=source_asset_key(table),
            partition=day,
            tags={DATA_VERSION_TAG: source_version(fp)},
            metadata={"source_rows": fp.rows},
        )
        for table, days in sorted(changed.items())
        for day, fp in days.items()
    ]
