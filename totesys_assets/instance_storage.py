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

It also turns on Dagster's event batching (`DAGSTER_EVENT_BATCH_SIZE`, read by Dagster at each event,
default off) in every process that builds such an instance, unless the variable is already set: a
range run's per-partition materialisations are then stored with one INSERT per batch, which
dagster-postgres implements (sqlite and the in-memory storage would store them one by one anyway).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.event_api import EventLogEntry
from dagster._core.events import DagsterEventType
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

EVENT_BATCH_SIZE = "1000"
PLANNED = DagsterEventType.ASSET_MATERIALIZATION_PLANNED
POOL_SIZE = 1
MAX_OVERFLOW = 4
POOL_RECYCLE_S = 3600


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

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        planned = [e for e in events if e.dagster_event_type == PLANNED]
        rest = [e for e in events if e.dagster_event_type != PLANNED]
        if planned:
            insert = self.prepare_insert_event_batch(planned)
            with self._connect() as conn:
                result = conn.execute(insert.returning(SqlEventLogStorageTable.c.id))
                event_ids = [int(row[0]) for row in result.fetchall()]
            latest_by_asset = {}
            for event, event_id in zip(planned, event_ids, strict=True):
                latest_by_asset[event.get_dagster_event().asset_key] = (event, event_id)
            with self.index_transaction() as conn:
                self._store_asset_event_tags(conn, planned, event_ids)
                for event, event_id in latest_by_asset.values():
                    self._store_asset_event(conn, event, event_id)
        if rest:
            super().store_event_batch(rest)

    def dispose(self) -> None:
        super().dispose()
        self._engine.dispose()
