"""The IO manager of the `raw/<table>` assets: one Parquet object per table and day."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import polars as pl

from totesys_assets.partitions import day_chunks
from totesys_assets.resources.lake.errors import LakeConflict, LakeError
from totesys_assets.resources.lake.resource import LakeResource
from totesys_assets.resources.lake.store import WRITE_THREADS
from totesys_assets.resources.lake.versions import RawDay, RawDays
from totesys_assets.specs import SOURCE_TABLES, TableSpec


class RawLakeIOManager(dg.ConfigurableIOManager):
    """IO manager of the `raw/<table>` assets: one Parquet object per table and day.

    Outputs are `{partition_key: frame}` (a single-run backfill writes each day separately);
    inputs load the requested days as one frame with the table's schema (an empty day is an
    empty frame, not an error).
    """

    lake: LakeResource

    def _spec(self, context: dg.OutputContext | dg.InputContext) -> TableSpec:
        table = context.asset_key.path[-1]
        if table not in SOURCE_TABLES:
            raise LakeError(f"RawLakeIOManager only stores raw source tables, not {context.asset_key}")
        return SOURCE_TABLES[table]

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pl.DataFrame]) -> None:
        spec = self._spec(context)
        days = list(context.asset_partition_keys)
        raw = obj if isinstance(obj, RawDays) else RawDays(obj)
        missing = set(days) - raw.held() - raw.unchanged
        if missing:
            raise LakeError(f"raw/{spec.name}: no frame for partitions {sorted(missing)}")
        try:
            added_per_day = self._store(spec, raw, [d for d in days if d not in raw.unchanged])
        finally:
            raw.close()
        # Recorded after the days are stored: a run that dies in between leaves the fingerprints
        # differing from the source's, so the change detector requests the days again.
        self.lake.record_fingerprints(spec.name, {d: f for d, f in raw.fingerprints.items() if d in days})
        new_versions = sum(added_per_day)
        written = sum(1 for added in added_per_day if added)
        # Dagster stamps this metadata on every partition of the run, so it describes the run's
        # write as a whole; per-day row counts are added by the asset itself.
        context.add_output_metadata(
            {
                "run_extracted_rows": sum(raw.rows.values()),
                "run_new_versions": new_versions,
                "run_objects_written": written,
                "run_partitions": len(days),
                "run_days_unchanged": len(days) - len(added_per_day),
            }
        )

    def _store(self, spec: TableSpec, raw: RawDays, to_write: list[str]) -> list[int]:
        """Merge and write the days, a chunk of days at a time (their stored objects are read per
        chunk, so a long range is held a chunk at a time); the versions added per day."""
        present = set(self.lake.raw_days(spec.name)).intersection(to_write)
        added: list[int] = []
        for chunk in day_chunks(to_write, raw.rows):
            unread = sorted(present.intersection(chunk) - set(raw.existing))
            existing = {**raw.existing, **self.lake.read_raw_days(spec.name, unread)}

            # Days are independent objects: merge, encode and write them on a few threads (Polars
            # and the file or S3 writes release the GIL). Each object is still written atomically,
            # and only over the object that was read (a day another run stored meanwhile is merged
            # again). A day the lake does not hold is stored as encoded by the step, if it was.
            def write(day: str, existing: dict[str, RawDay] = existing) -> int:
                gone = raw.gone.get(day, [])
                encoded = raw.encoded.get(day)
                if encoded is not None and day not in existing:
                    data = encoded if isinstance(encoded, bytes) else encoded.read_bytes()
                    try:
                        self.lake.put(self.lake.raw_key(spec.name, day), data, if_absent=True)
                        return raw.rows[day]
                    except LakeConflict:  # another run created the day meanwhile: merge with it
                        existing[day] = self.lake.read_raw_day(spec.name, day)  # type: ignore[assignment]
                return self.lake.write_raw_day(
                    spec.name, day, raw.frame(day), existing.get(day), gone=gone, captured_at=raw.captured_at
                )

            with ThreadPoolExecutor(max_workers=max(1, min(WRITE_THREADS, len(chunk)))) as pool:
                added.extend(pool.map(write, chunk))
            raw.existing = {}  # the step's reads are used once
        return added

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        spec = self._spec(context)
        days = list(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.lake.read_raw(spec.name, days)
