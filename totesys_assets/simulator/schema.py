"""The real totesys schema: the 11 tables rendered from the specs, plus Prisma's bookkeeping table.

`_prisma_migrations` is not one of the specs (it is never ingested) but the real database has it,
so a simulated source is indistinguishable from `schema/schema.sql`.
"""

from __future__ import annotations

import psycopg

from totesys_assets.ddl import schema_statements
from totesys_assets.specs import SOURCE_TABLES

# Verbatim from the reference dump (columns, defaults and primary key name).
PRISMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id character varying(36) NOT NULL,
    checksum character varying(64) NOT NULL,
    finished_at timestamp with time zone,
    migration_name character varying(255) NOT NULL,
    logs text,
    rolled_back_at timestamp with time zone,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    applied_steps_count integer DEFAULT 0 NOT NULL,
    CONSTRAINT _prisma_migrations_pkey PRIMARY KEY (id)
)
"""


def create_schema(conn: psycopg.Connection) -> None:
    """Create enums, tables, sequences, keys and indexes; a no-op when they already exist."""
    with conn.cursor() as cur:
        for statement in schema_statements(SOURCE_TABLES.values(), source_style=True):
            cur.execute(statement)
        cur.execute(PRISMA_MIGRATIONS_DDL)
