"""Dagster instance storage for deployments: dagster-postgres' event log, kept on pooled
connections and storing its events in batches.

dagster-postgres opens a new connection for every event outside the webserver and writes planned
materialisations one by one; a range backfill stores two events per partition, so that set-up
dominates a large run. `PooledPostgresEventLogStorage` is the stock storage (same config, tables,
migrations and rows) with one pooled, pre-pinged connection per process, planned materialisations
and planned partitioned check evaluations stored in batches like materialisations (one
executemany, one serialisation template per asset), and `DAGSTER_EVENT_BATCH_SIZE` set unless it
already is. Measurements: bench/README.md.

Dagster internals this relies on (check them when upgrading dagster or dagster-postgres):

* `dagster._core.event_api.EventLogEntry`, `dagster._core.events.DagsterEventType` and
  `AssetMaterializationPlannedData` (their NamedTuple `_replace`, `dagster_event`,
  `event_specific_data.partition`, `event_type_value`, `is_asset_failed_to_materialize`);
* `dagster._core.storage.event_log.schema.SqlEventLogStorageTable` and `AssetCheckExecutionsTable`,
  `dagster._core.storage.asset_check_execution_record.AssetCheckExecutionRecordStatus`;
* `dagster._serdes.serialize_value` and `ConfigurableClassData`;
* `dagster_postgres.utils.create_pg_engine`, `pg_url_from_config`, `get_token_provider_from_config`;
* `PostgresEventLogStorage` members: the attributes `_engine`, `_token_provider` and
  `postgres_url`; the methods `_event_to_row`, `_event_insert_timestamp`, `_connect`,
  `index_connection`, `index_transaction`, `_store_asset_event_tags`, `_store_asset_event`; and
  the overridden `store_event_batch` and `_store_asset_check_evaluation_planned`;
* the environment variable `DAGSTER_EVENT_BATCH_SIZE`, read by Dagster at each event.

Back to the stock storage: in the instance's `event_log_storage`, `module: dagster_postgres.event_log`
and `class: PostgresEventLogStorage` (same config).
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

        A template is the event with placeholder partition and timestamp, serialised once; it is
        used for the events equal to it but for those two fields, and checked against a full
        serialisation of the first of them (any difference, and every event is serialised on its own).
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
