"""Demo pace: extra activity at the wall clock so a user watching the embedded demo sees it move.

The simulated business follows the real rate (~2 orders an hour, weekdays only); a demo tick adds
`rate` new sales orders a minute (with their transaction and payment), pays due payments and
changes one recent order now and then, all stamped with the real now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from psycopg import sql

from totesys_assets.simulator import clock
from totesys_assets.simulator.simulator import Simulator
from totesys_assets.simulator.timeline import to_ms, utc_now

CHANGE_EVERY_ORDERS = 5  # about one in-place order change per five new orders
# Only recent payments get paid: paying one moves its row to today, and paying years-old ones
# would have every tick re-capture (and reload) an old day.
RECENT = timedelta(days=7)


@dataclass
class DemoTick:
    orders: list[int] = field(default_factory=list)
    paid: int = 0
    changed: list[int] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.orders)} new sales order(s), {self.paid} payment(s) paid, {len(self.changed)} changed"
        )


def orders_for(rate: float, minutes: float, rng: np.random.Generator) -> int:
    """How many orders `rate` per minute gives for `minutes` (the fraction drawn, never negative)."""
    expected = max(rate, 0.0) * max(minutes, 0.0)
    whole = int(expected)
    return whole + int(rng.random() < expected - whole)


def demo_tick(sim: Simulator, *, rate: float, minutes: float = 1.0, at: datetime | None = None) -> DemoTick:
    """One demo tick at `at` (default now): new orders, due payments paid, an occasional change."""
    at = at or utc_now()
    rng = np.random.default_rng([sim.seed, to_ms(at), 7])
    n = orders_for(rate, minutes, rng)
    tick = DemoTick()
    # Distinct milliseconds: the simulator draws an order's values from (seed, created_at).
    tick.orders = [sim.insert_sales_order(at=at + timedelta(milliseconds=i)) for i in range(n)]
    stamp = at + timedelta(milliseconds=n)
    with sim.connect() as conn:
        clock.lock(conn)
        paid = conn.execute(
            sql.SQL(
                "UPDATE payment SET paid = true, last_updated = %s WHERE payment_id IN ("
                " SELECT payment_id FROM payment WHERE NOT paid AND payment_date <= %s AND created_at >= %s"
                " ORDER BY payment_date, payment_id LIMIT %s)"
            ),
            (stamp, at.date().isoformat(), at - RECENT, max(n, 1)),
        )
        tick.paid = paid.rowcount
        if n and rng.random() < n / CHANGE_EVERY_ORDERS:
            row = conn.execute(
                sql.SQL(
                    "UPDATE sales_order SET units_sold = units_sold + %s, last_updated = %s WHERE sales_order_id ="
                    " (SELECT sales_order_id FROM sales_order WHERE sales_order_id < %s"
                    " ORDER BY sales_order_id DESC OFFSET %s LIMIT 1) RETURNING sales_order_id"
                ),
                (int(rng.integers(1, 500)), stamp, min(tick.orders), int(rng.integers(0, 20))),
            ).fetchone()
            if row:
                tick.changed.append(row[0])
    return tick
