"""Dagster instance storage for deployments: dagster-postgres' event log with a connection pool.

dagster-postgres opens a new database connection for every event it stores (SQLAlchemy `NullPool`)
everywhere except in the webserver, which it switches to a one-connection pool
(`optimize_for_webserver`). A range backfill stores two events per partition (planned, then
materialised), each over two fresh connections: on the embedded PostgreSQL that is ~8 ms per
partition of pure connection set-up, on a TLS connection to RDS several times that. Measured with
a do-nothing 11-asset x 744-day backfill (bench/README.md): 189 s with the stock storage, 74 s with
`DAGSTER_EVENT_BATCH_SIZE` alone, 24 s with this storage and batching (an in-memory instance: 34 s).

`PooledPostgresEventLogStorage` is the stock storage (same config, same tables, same migrations)
with the webserver's pooling applied in every process: the daemon, the code server and each run
worker keep one open connection (plus short-lived overflow under concurrent use), checked with a
pre-ping so a restarted database costs a reconnect, not a failed event. `dispose()` closes it.

Planned-materialisation events (one per partition, written when a run is created) are stored in
batches as well: dagster-postgres batches only materialisations and observations and writes the
planned ones one by one (an INSERT, a NOTIFY and an asset-key update each). Here a batch of them is
one multi-row INSERT and one asset-key update per asset, exactly what dagster-postgres does for a
batch of materialisations; the event rows, their partitions and storage ids are the same, so
Dagster's in-progress and failed-partition tracking (which reads them) is unchanged.

Both kinds of batch are inserted with SQLAlchemy's "insertmanyvalues" (the INSERT compiled once, the
rows sent in multi-row pages, ids returned in row order) instead of dagster-postgres' one
`insert().values([...1000 rows...])` statement, which SQLAlchemy compiles afresh for every batch:
on a 744-day range run that compilation alone took ~1 s per asset group. Planned asset-check
evaluations of a partitioned check (one row per planned partition) are stored the same way, with
the event serialised once rather than once per partition (~2.8 s for the 12 fact checks of a
744-day run), and a run's planned materialisations, which differ only in partition and time, are
serialised from one checked template per asset (~1 s of creating the 8,184-partition raw run).
The rows are the same; only the client-side cost changes.

It also turns on Dagster's event batching (`DAGSTER_EVENT_BATCH_SIZE`, read by Dagster at each event,
default off) in every process that builds such an instance, unless the variable is already set: a
range run's per-partition materialisations are then stored with one INSERT per batch, which
dagster-postgres implements (sqlite and the in-memory storage would store them one by one anyway).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.event_api import EventLogEntry
from dagster._core.events import AssetMaterializationPlannedData, DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable, SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

EVENT_BATCH_SIZE = "1000"
PLANNED = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
# Batches dagster-postgres stores as one INSERT ... RETURNING id plus an update of the asset's row.
BATCHED_KINDS = (
    {DagsterEventType.ASSET_MATERIALIZATION},
    {DagsterEventType.ASSET_OBSERVATION},
)
POOL_SIZE = 1
MAX_OVERFLOW = 4
POOL_RECYCLE_S = 3600


# Placeholders of a planned event's partition and timestamp in its serialisation template.
_PARTITION_PLACEHOLDER = "\x00partition\x00"
_TIMESTAMP_PLACEHOLDER = 1.2345678901234567e-300


def _planned_template_key(event: EventLogEntry) -> EventLogEntry | None:
    """A single-partition planned materialisation with placeholder partition and timestamp (events
    equal in this are equal but for those two), or None for any other event."""
    dagster_event = event.dagster_event
    if dagster_event is None or dagster_event.event_type_value != PLANNED.value:
        return None
    data = dagster_event.event_specific_data
    if not isinstance(data, AssetMaterializationPlannedData) or data.partition is None:
        return None
    placeholder = data._replace(partition=_PARTITION_PLACEHOLDER)
    return event._replace(
        timestamp=_TIMESTAMP_PLACEHOLDER,
        dagster_event=dagster_event._replace(event_specific_data=placeholder),
    )


def _from_template(template: str, event: EventLogEntry) -> str:
    """The serialisation of a planned event from its template (JSON writes floats with repr)."""
    partition = event.get_dagster_event().event_specific_data.partition  # type: ignore[union-attr]
    return template.replace(json.dumps(_PARTITION_PLACEHOLDER), json.dumps(partition), 1).replace(
        repr(_TIMESTAMP_PLACEHOLDER), repr(event.timestamp), 1
    )


class PooledPostgresEventLogStorage(PostgresEventLogStorage):
    """`PostgresEventLogStorage` keeping its connections open (see the module docstring)."""

    def __init__(self, postgres_url: str, *args: Any, **kwargs: Any):
        super().__init__(postgres_url, *args, **kwargs)
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        existing_options = self._engine.url.query.get("options")
        self._engine.dispose()
        self._engine = create_pg_engine(
            self.postgres_url,
            self._token_provider,
            isolation_level="AUTOCOMMIT",
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_recycle=POOL_RECYCLE_S,
            pool_pre_ping=True,
            **({"connect_args": {"options": existing_options}} if existing_options else {}),
        )

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def _event_rows(self, events: Sequence[EventLogEntry]) -> list[dict[str, Any]]:
        """`_event_to_row` of each event, the planned materialisations of a run serialised from one
        template per asset (they differ only in partition and timestamp).

        Serialising 8,184 planned events one by one took ~1 s of the raw backfill's run creation,
        before its first step can start. A template is the event with placeholder partition and
        timestamp, serialised once; it is used for the events equal to it but for those two
        fields, and checked against a full serialisation of the first of them (any difference, and
        every event is serialised on its own).
        """
        rows: list[dict[str, Any]] = []
        template_key: EventLogEntry | None = None
        template: str | None = None
        for event in events:
            key = _planned_template_key(event)
            if key is None:
                rows.append(self._event_to_row(event))
                continue
            row = self._event_to_row(event) if key != template_key else None
            if row is not None:  # a new template, checked against this event's own serialisation
                template_key, template = key, serialize_value(key)
                if _from_template(template, event) != row["event"]:
                    template = None
                rows.append(row)
                continue
            if template is None:
                rows.append(self._event_to_row(event))
                continue
            rows.append(self._row_from_template(template, event))
        return rows

    def _row_from_template(self, template: str, event: EventLogEntry) -> dict[str, Any]:
        dagster_event = event.get_dagster_event()
        return {
            "run_id": event.run_id,
            "event": _from_template(template, event),
            "dagster_event_type": dagster_event.event_type_value,
            "timestamp": self._event_insert_timestamp(event),
            "step_key": dagster_event.step_key,
            "asset_key": dagster_event.asset_key.to_string(),  # type: ignore[union-attr]
            "partition": dagster_event.partition,
        }

    def _insert_events(self, events: Sequence[EventLogEntry]) -> list[int]:
        """Insert event rows in one executemany; their storage ids, in the events' order."""
        rows = self._event_rows(events)
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        with self._connect() as conn:
            event_ids = [int(row[0]) for row in conn.execute(insert, rows).fetchall()]
        if len(event_ids) != len(rows):
            raise RuntimeError(f"stored {len(rows)} events but got {len(event_ids)} storage ids back")
        return event_ids

    def _store_batch(self, events: Sequence[EventLogEntry], latest_per_asset: bool) -> None:
        """dagster-postgres' batch write: rows, asset-event tags, then each asset's latest event."""
        event_ids = self._insert_events(events)
        latest = {}
        for event, event_id in zip(events, event_ids, strict=True):
            latest[event.get_dagster_event().asset_key if latest_per_asset else None] = (event, event_id)
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            for event, event_id in latest.values():
                self._store_asset_event(conn, event, event_id)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        planned = [e for e in events if e.dagster_event_type == PLANNED]
        rest = [e for e in events if e.dagster_event_type != PLANNED]
        if planned:
            self._store_batch(planned, latest_per_asset=True)
        if not rest:
            return
        rest = [e for e in rest if not e.get_dagster_event().is_asset_failed_to_materialize]
        kinds = {e.get_dagster_event().event_type for e in rest}
        if rest and kinds in BATCHED_KINDS:
            # As dagster-postgres does: only the batch's last event updates the asset's row.
            self._store_batch(rest, latest_per_asset=False)
        elif rest:
            super().store_event_batch(rest)

    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.get_dagster_event().event_specific_data
        subset = getattr(planned, "partitions_subset", None)
        partition_keys = subset.get_partition_keys() if subset else [None]
        common = dict(
            asset_key=planned.asset_key.to_string(),  # type: ignore[union-attr]
            check_name=planned.check_name,  # type: ignore[union-attr]
            run_id=event.run_id,
            execution_status=AssetCheckExecutionRecordStatus.PLANNED.value,
            evaluation_event=serialize_value(event),
            evaluation_event_timestamp=self._event_insert_timestamp(event),
            evaluation_event_storage_id=event_id,
        )
        with self.index_connection() as conn:
            conn.execute(
                AssetCheckExecutionsTable.insert(), [{**common, "partition": p} for p in partition_keys]
            )

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()
