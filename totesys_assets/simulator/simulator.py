"""The demo totesys source: create the real schema, seed a realistic history, move time forward.

Time is simulated (see `clock`): `seed_history` writes everything up to `end` and sets the clock
there; `advance` writes what happens between the clock and a later moment. Both draw activity per
business day from (seed, day), so a history built in one call equals one built by many advances.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

from totesys_assets.settings import redact_url
from totesys_assets.simulator import clock, copy_load, static_data
from totesys_assets.simulator.activity import CHANGE_HORIZON_MS, Events, draw_window
from totesys_assets.simulator.reference_loader import read_export
from totesys_assets.simulator.schema import create_schema
from totesys_assets.simulator.timeline import (
    DAY_MS,
    DEFAULT_START,
    from_ms,
    naive_utc,
    to_ms,
    utc_now,
)
from totesys_assets.simulator.window_rows import ORDER_TABLES, SourceState, WindowRows, build_window
from totesys_assets.specs import SOURCE_TABLE_NAMES, SOURCE_TABLES

GROWING_TABLES = ("design", "sales_order", "purchase_order", "transaction", "payment")


class SimulatorError(RuntimeError):
    """The source is not in a state the requested operation can work on."""


def _ms_precision(value: datetime) -> datetime:
    value = naive_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


class Simulator:
    """A seeded, deterministic generator of the totesys OLTP database on any PostgreSQL URL.

    `scale` multiplies the order volume (1 = the real rate, ~30 orders per weekday).
    """

    def __init__(self, url: str, *, seed: int = 42, scale: float = 1.0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.url, self.seed, self.scale = url, int(seed), float(scale)

    def __repr__(self) -> str:
        return f"Simulator({redact_url(self.url)!r}, seed={self.seed}, scale={self.scale})"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url)

    # -- schema and bulk loads ----------------------------------------------------------------

    def create_schema(self) -> None:
        """The real totesys schema (11 tables + `_prisma_migrations`); idempotent."""
        with self.connect() as conn:
            create_schema(conn)

    def seed_history(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        days: int | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, int]:
        """Seed rows at `start`, then every design, order, payment and change up to `end`.

        Defaults: start 2022-11-03 14:20:49.962 (the real seed), end now (UTC, ms). `days=N` means
        the N days ending at `end`. Creates the schema if needed; refuses a non-empty source unless
        `replace`. One transaction. Returns row counts per table.
        """
        end = _ms_precision(end) if end else utc_now()
        if days is not None:
            if start is not None:
                raise ValueError("pass either start or days, not both")
            start = end - timedelta(days=days)
        start = _ms_precision(start) if start else DEFAULT_START
        if start >= end:
            raise ValueError(f"start {start} must be before end {end}")
        lo, hi = to_ms(start), to_ms(end)

        frames = static_data.seed_frames(lo)
        state = SourceState(
            next_id={t: (frames[t].height if t in frames else 0) + 1 for t in GROWING_TABLES},
            design_count=frames["design"].height,
        )
        rows = build_window(
            draw_window(self.seed, self.scale, lo, hi), state, seed=self.seed, lo_ms=lo, hi_ms=hi
        )
        frames["design"] = pl.concat([frames["design"], rows.inserts.pop("design")])
        frames |= rows.inserts
        with self.connect() as conn:
            clock.lock(conn)
            create_schema(conn)
            self._require_empty(conn, replace)
            counts = copy_load.replace_all(conn, frames)
            clock.write_clock(conn, end, self.seed, self.scale)
        return counts

    def load_reference(self, folder: Path | str, *, replace: bool = False) -> dict[str, int]:
        """Load a real export folder (Parquet or JSON) exactly as it is; returns row counts.

        Tables missing from the export (the 2025 snapshot has no payment file) stay empty.
        The simulated clock restarts from the snapshot's newest timestamp.
        """
        frames = read_export(folder)
        with self.connect() as conn:
            clock.lock(conn)
            create_schema(conn)
            self._require_empty(conn, replace)
            counts = copy_load.replace_all(conn, frames)
            clock.reset_clock(conn)
        return counts

    def _require_empty(self, conn: psycopg.Connection, replace: bool) -> None:
        if replace:
            return
        for table in SOURCE_TABLE_NAMES:
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
            if conn.execute(query).fetchone()[0]:
                raise SimulatorError(
                    f"{redact_url(self.url)} already has rows in {table!r}; "
                    "use advance() to add activity, or replace=True to start over"
                )

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime | None:
        """The simulated now: the clock row, else the newest timestamp in the data."""
        with self.connect() as conn:
            return self._now(conn)

    @staticmethod
    def _now(conn: psycopg.Connection) -> datetime | None:
        row = clock.read_clock(conn)
        return row.now if row else clock.newest_timestamp(conn)

    def advance(self, interval: timedelta | None = None, *, to: datetime | None = None) -> dict[str, int]:
        """Move the simulated clock forward and write what happened meanwhile.

        The target is `to`, else clock + `interval`, else the real now (catch up). New designs,
        orders with their transaction and payment, payments flipping to paid at the 07:55 run,
        and in-place order changes. Returns, per table, the rows inserted or updated (= new row
        versions). Deterministic for the same database state, seed and scale.
        """
        if interval is not None and to is not None:
            raise ValueError("pass either interval or to, not both")
        counts = dict.fromkeys(SOURCE_TABLE_NAMES, 0)
        with self.connect() as conn:
            clock.lock(conn)
            now = self._now(conn)
            if now is None:
                raise SimulatorError(
                    f"{redact_url(self.url)} has no totesys rows: seed_history() or load_reference() first"
                )
            target = _ms_precision(to if to else (now + interval if interval else utc_now()))
            if target <= now:
                return counts
            lo, hi = to_ms(now), to_ms(target)
            events = draw_window(self.seed, self.scale, lo, hi)
            rows = build_window(events, self._state(conn, events, lo), seed=self.seed, lo_ms=lo, hi_ms=hi)
            for table, n in self._update_existing(conn, rows).items():
                counts[table] += n
            for table, n in copy_load.append(conn, rows.inserts).items():
                counts[table] += n
            clock.write_clock(conn, target, self.seed, self.scale)
        return counts

    @staticmethod
    def _state(conn: psycopg.Connection, events: Events, lo_ms: int) -> SourceState:
        next_id = {}
        for table in GROWING_TABLES:
            pk = sql.Identifier(SOURCE_TABLES[table].primary_key)
            query = sql.SQL("SELECT COALESCE(max({}), 0) + 1 FROM {}").format(pk, sql.Identifier(table))
            next_id[table] = conn.execute(query).fetchone()[0]
        recent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if events.changes["t"].size:
            since = from_ms(int(events.changes["t"].min()) - CHANGE_HORIZON_MS)
            for table in ORDER_TABLES:
                pk = sql.Identifier(SOURCE_TABLES[table].primary_key)
                query = sql.SQL(
                    "SELECT {pk}, created_at FROM {t} WHERE created_at >= %s AND created_at <= %s "
                    "ORDER BY created_at, {pk}"
                ).format(pk=pk, t=sql.Identifier(table))
                found = conn.execute(query, (since, from_ms(lo_ms))).fetchall()
                ids = np.array([r[0] for r in found], dtype=np.int64)
                created = pl.Series([r[1] for r in found], dtype=pl.Datetime("ms")).cast(pl.Int64).to_numpy()
                recent[table] = (ids, created)
        return SourceState(next_id=next_id, design_count=next_id["design"] - 1, recent_orders=recent)

    @staticmethod
    def _update_existing(conn: psycopg.Connection, rows: WindowRows) -> dict[str, int]:
        """Payment runs and order changes that touch rows stored before this window."""
        updated: dict[str, int] = {}
        runs = rows.payment_runs
        if runs.height:
            query = sql.SQL(
                "UPDATE {t} SET {paid} = true, {lu} = r.run_at "
                "FROM unnest(%s::text[], %s::timestamp[]) AS r(day, run_at) "
                "WHERE {t}.{date} = r.day AND NOT {t}.{paid} AND {t}.{created} < r.run_at"
            ).format(
                t=sql.Identifier("payment"),
                paid=sql.Identifier("paid"),
                lu=sql.Identifier("last_updated"),
                date=sql.Identifier("payment_date"),
                created=sql.Identifier("created_at"),
            )
            cur = conn.execute(query, (runs["payment_date"].to_list(), runs["run_at"].to_list()))
            updated["payment"] = cur.rowcount
        for table, changes in rows.order_updates.items():
            if not changes.height:
                continue
            query = sql.SQL(
                "UPDATE {t} SET {d} = c.d, {lu} = c.ts FROM unnest(%s::int[], %s::text[], %s::timestamp[]) "
                "AS c(id, d, ts) WHERE {t}.{pk} = c.id"
            ).format(
                t=sql.Identifier(table),
                d=sql.Identifier("agreed_delivery_date"),
                lu=sql.Identifier("last_updated"),
                pk=sql.Identifier(SOURCE_TABLES[table].primary_key),
            )
            cur = conn.execute(query, [changes[c].to_list() for c in changes.columns])
            updated[table] = cur.rowcount
        return updated

    # -- single rows for end-to-end tests ----------------------------------------------------

    def insert_sales_order(self, at: datetime | None = None, **values: object) -> int:
        """Insert one sales order with its transaction and unpaid payment; returns its id.

        `at` (default: the real now) is created_at and last_updated of all three rows. Any
        sales_order column can be fixed through `values` (e.g. units_sold=10); the rest is drawn
        from (seed, at). The simulated clock does not move.
        """
        at = _ms_precision(at) if at else utc_now()
        spec = SOURCE_TABLES["sales_order"]
        fixed = {spec.primary_key, "created_at", "last_updated"}
        for name in values:
            if name in fixed:
                raise ValueError(f"sales_order.{name} is set by the simulator")
            spec.column(name)  # KeyError naming an unknown column
        rng = np.random.default_rng([self.seed, to_ms(at), 1])
        with self.connect() as conn:
            clock.lock(conn)
            n_designs = conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier("design_id"), sql.Identifier("design")
                )
            ).fetchone()[0]
            if not n_designs:
                raise SimulatorError("the source has no designs: seed_history() or load_reference() first")
            order = {
                "design_id": int(rng.integers(1, n_designs + 1)),
                "staff_id": int(rng.integers(1, len(static_data.STAFF) + 1)),
                "counterparty_id": int(rng.integers(1, len(static_data.COUNTERPARTY) + 1)),
                "units_sold": int(rng.integers(1_001, 99_974)),
                "unit_price": Decimal(int(rng.integers(200, 401))) / 100,
                "currency_id": int(rng.integers(1, len(static_data.CURRENCY) + 1)),
                "agreed_delivery_date": from_ms(to_ms(at) + int(rng.integers(0, 7 * DAY_MS)))
                .date()
                .isoformat(),
                "agreed_payment_date": from_ms(to_ms(at) + int(rng.integers(0, 6 * DAY_MS)))
                .date()
                .isoformat(),
                "agreed_delivery_location_id": int(rng.integers(1, len(static_data.ADDRESS) + 1)),
            } | values
            stamps = {"created_at": at, "last_updated": at}
            order_id = _insert(conn, "sales_order", order | stamps)
            tx_id = _insert(
                conn, "transaction", {"transaction_type": "SALE", "sales_order_id": order_id} | stamps
            )
            amount = (Decimal(str(order["unit_price"])) * int(str(order["units_sold"]))).quantize(
                Decimal("0.01")
            )
            _insert(
                conn,
                "payment",
                stamps
                | {
                    "transaction_id": tx_id,
                    "counterparty_id": order["counterparty_id"],
                    "payment_amount": amount,
                    "currency_id": order["currency_id"],
                    "payment_type_id": static_data.SALES_RECEIPT_ID,
                    "paid": False,
                    "payment_date": order["agreed_payment_date"],
                    "company_ac_number": int(rng.integers(10_000_000, 100_000_000)),
                    "counterparty_ac_number": int(rng.integers(10_000_000, 100_000_000)),
                },
            )
        return order_id

    # -- inspection --------------------------------------------------------------------------

    def stats(self) -> dict[str, tuple[int, datetime | None]]:
        """Row count and newest last_updated per table."""
        out = {}
        with self.connect() as conn:
            for table in SOURCE_TABLE_NAMES:
                query = sql.SQL("SELECT count(*), max({}) FROM {}").format(
                    sql.Identifier("last_updated"), sql.Identifier(table)
                )
                out[table] = tuple(conn.execute(query).fetchone() or (0, None))
        return out


def _insert(conn: psycopg.Connection, table: str, values: dict[str, object]) -> int:
    spec = SOURCE_TABLES[table]
    names = [spec.column(n).name for n in values]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        sql.Identifier(spec.primary_key),
    )
    return conn.execute(query, list(values.values())).fetchone()[0]
