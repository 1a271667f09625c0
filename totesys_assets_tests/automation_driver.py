"""What the daemon does between two source states, in process: the change sensor's tick, then the
automation's evaluations, each request executed as a real run, until automation requests nothing.

Tests use it to prove a change arrives with no manual launch; `test_e2e_daemon.py` proves the same
under the real daemon.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from totesys_assets.automation.change_sensor import source_fingerprint_sensor
from totesys_assets.raw.detector import source_assets
from totesys_assets_tests.helpers import failure_text, materialize_range


def unpaced(cursor: str | None) -> str | None:
    """The change sensor's cursor as if its last check were long ago: ticks as far apart as the
    daemon's, which its pacing (CHECK_SHARE) would not hold back."""
    return json.dumps({**json.loads(cursor), "check_at": None}) if cursor else cursor


@dataclass
class Driver:
    """The change sensor and the automation over one instance; `settle()` runs them to quiet."""

    assets: Sequence
    resources: dict
    instance: dg.DagsterInstance = field(default_factory=dg.DagsterInstance.ephemeral)
    sensor_cursor: str | None = None
    automation_cursor: object = None
    # The automation's clock: every evaluation happens at the instant of the first one (a copy of
    # a state carries it on), so the 20-minute heartbeat never passes between two evaluations and a
    # test sees only what its source changes request (test_e2e_daemon quiets it with QUIET_CRONS).
    clock: datetime | None = None
    # Requests seen per settle(): (asset, partition or None) in the order they ran.
    requests: list[list[tuple[str, str | None]]] = field(default_factory=list)
    # The runs the change sensor's last tick requested (ExecuteInProcessResults).
    sensor_runs: list = field(default_factory=list)

    @property
    def defs(self) -> dg.Definitions:
        return dg.Definitions(assets=[*source_assets, *self.assets], resources=self.resources)

    def tick_sensor(self) -> list[tuple[str, str | None]]:
        """One tick of the change sensor: its observations are stored and its run requests run, as
        the daemon does. Returns what the requested runs materialised."""
        sensor_resources = {k: self.resources[k] for k in ("source", "lake")}
        self.sensor_cursor = unpaced(self.sensor_cursor)
        with dg.build_sensor_context(
            instance=self.instance, resources=sensor_resources, cursor=self.sensor_cursor
        ) as context:
            result = source_fingerprint_sensor(context)
            self.sensor_cursor = context.cursor
        if not isinstance(result, dg.SensorResult):
            return []
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        ran: list[tuple[str, str | None]] = []
        self.sensor_runs = []
        for request in result.run_requests or []:
            run = self._materialize(request.asset_selection, request.partition_key, tags=request.tags)
            assert run.success, failure_text([run])
            self.sensor_runs.append(run)
            ran += sorted(
                (e.asset_key.path[-1], e.partition)  # type: ignore[union-attr]
                for e in run.get_asset_materialization_events()
            )
        return ran

    def evaluate(self, when: datetime | None = None) -> dict[dg.AssetKey, set[str | None]]:
        """One automation evaluation; the requested asset partitions (None: unpartitioned)."""
        self.clock = self.clock or datetime.now(UTC)
        result = dg.evaluate_automation_conditions(
            defs=self.defs,
            instance=self.instance,
            cursor=self.automation_cursor,
            evaluation_time=when or self.clock,
        )
        self.automation_cursor = result.cursor
        out: dict[dg.AssetKey, set[str | None]] = {}
        for key in self.defs.resolve_asset_graph().materializable_asset_keys:
            parts = result.get_requested_partitions(key)
            if parts:
                out[key] = set(parts)
        return out

    def settle(self, *, max_rounds: int = 8) -> list[tuple[str, str | None]]:
        """Sensor tick, then evaluate-and-run until nothing is requested; every request ran, in
        dependency order (raw, dimensions, facts), partitioned ones as one run per day or, for many
        days, one range run as the automation's backfill would."""
        ran: list[tuple[str, str | None]] = []
        if self.automation_cursor is None:
            # The daemon evaluates automation from its start: its first evaluation has no previous
            # one to compare data versions with, so it must precede the sensor's first report.
            ran += self._run_until_quiet(max_rounds)
        ran += self.tick_sensor()
        ran += self._run_until_quiet(max_rounds)
        self.requests.append(ran)
        return ran

    def _run_until_quiet(self, max_rounds: int) -> list[tuple[str, str | None]]:
        ran: list[tuple[str, str | None]] = []
        for _ in range(max_rounds):
            requested = self.evaluate()
            if not requested:
                return ran
            for group in ("raw", "dimensions", "facts"):
                keys = {k: p for k, p in requested.items() if self._group(k) == group}
                if keys:
                    self._run(keys)
                    ran += sorted((k.path[-1], p) for k, parts in keys.items() for p in parts)
        raise AssertionError(f"automation still requesting after {max_rounds} rounds: {ran[-20:]}")

    def _group(self, key: dg.AssetKey) -> str:
        return self.defs.resolve_asset_graph().get(key).group_name or ""

    def _run(self, requested: dict[dg.AssetKey, set[str | None]]) -> None:
        selection = dg.AssetSelection.assets(*requested)
        days = sorted({p for parts in requested.values() for p in parts if p is not None})
        if not days:
            results = [self._materialize(selection)]
        elif len(days) > 3:
            results = [
                materialize_range(
                    self.assets,
                    self.resources,
                    days[0],
                    days[-1],
                    selection=selection,
                    instance=self.instance,
                    raise_on_error=False,
                )
            ]
        else:
            results = [
                self._materialize(
                    dg.AssetSelection.assets(*(k for k, p in requested.items() if day in p)), day
                )
                for day in days
            ]
        assert all(r.success for r in results), failure_text(results)

    def _materialize(
        self, selection, day: str | None = None, tags: dict | None = None
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            self.assets,
            resources=self.resources,
            selection=selection,
            partition_key=day,
            tags=tags,
            instance=self.instance,
            raise_on_error=False,
        )
