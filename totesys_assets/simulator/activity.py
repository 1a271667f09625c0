"""Random draws of the source's activity, one business day at a time.

Every weekday gets its own numpy Generator seeded from (seed, day), so a day's designs, orders
and in-place changes are the same whether they are drawn by `seed_history` for two years or by
`advance` five minutes at a time. Draws are vectorised per day; there is no loop per row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from totesys_assets.simulator import static_data as static
from totesys_assets.simulator.timeline import (
    BATCH_SECOND_MS,
    DAY_MS,
    MINUTE_MS,
    OPEN_MS,
    SLOT_MS,
    SLOTS_PER_DAY,
    weekday,
)

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Rates:
    """Mean activity per weekday at scale 1 (measured on the 2024-11-15 export)."""

    sales: float = 21.0
    purchases: float = 9.0
    designs: float = 1.0  # not multiplied by scale: the catalogue grows at its own pace
    change_fraction: float = 0.01  # share of orders changed in place (last_updated bumped)


RATES = Rates()
OPEN_MINUTES = 11 * 60  # 08:00–18:59
CHANGE_HORIZON_MS = 7 * DAY_MS  # a change hits an order created in the 7 days before it
_A_MONDAY = 4  # 1970-01-05


@dataclass
class Events:
    """Everything drawn for a window: one dict of equal-length arrays per kind of event."""

    designs: Arrays
    sales: Arrays
    purchases: Arrays
    changes: Arrays


def _arrival_ms(rng: np.random.Generator, day_open: int, n: int) -> np.ndarray:
    """A minute between 08:00 and 18:59, at the batch second (~:10) of the source's job."""
    minute = rng.integers(0, OPEN_MINUTES, n) * MINUTE_MS
    return day_open + minute + rng.integers(*BATCH_SECOND_MS, n)


def _orders(rng: np.random.Generator, created: np.ndarray) -> Arrays:
    n = created.size
    return {
        "created": created,
        "staff_id": rng.integers(1, len(static.STAFF) + 1, n),
        "counterparty_id": rng.integers(1, len(static.COUNTERPARTY) + 1, n),
        "currency_id": rng.integers(1, len(static.CURRENCY) + 1, n),
        "location_id": rng.integers(1, len(static.ADDRESS) + 1, n),
        # Agreed dates run 0–7 (delivery) and 0–6 (payment) days ahead, as in the real data.
        "delivery_day": (created + rng.integers(0, 7 * DAY_MS + 1, n)) // DAY_MS,
        "payment_day": (created + rng.integers(0, 6 * DAY_MS + 1, n)) // DAY_MS,
        "company_ac": rng.integers(10_000_000, 100_000_000, n),
        "counterparty_ac": rng.integers(10_000_000, 100_000_000, n),
    }


def draw_day(seed: int, scale: float, day: int, rates: Rates = RATES) -> Events:
    """The activity of one epoch day (empty at weekends). The draw order is part of the contract."""
    if weekday(day) >= 5:
        return empty_events()
    rng = np.random.default_rng([seed, day])
    day_open = day * DAY_MS + OPEN_MS
    slots = day_open + np.arange(SLOTS_PER_DAY, dtype=np.int64) * SLOT_MS
    batches = (
        slots + rng.integers(0, 15, SLOTS_PER_DAY) * MINUTE_MS + rng.integers(*BATCH_SECOND_MS, SLOTS_PER_DAY)
    )
    n_sales = rng.poisson(rates.sales * scale / SLOTS_PER_DAY, SLOTS_PER_DAY)
    n_purchases = rng.poisson(rates.purchases * scale / SLOTS_PER_DAY, SLOTS_PER_DAY)

    sales_created = np.repeat(batches, n_sales)
    sales = _orders(rng, sales_created + rng.integers(0, 4, sales_created.size))
    n = sales_created.size
    sales |= {
        "units_sold": rng.integers(1_001, 99_974, n),
        "price_cents": rng.integers(200, 401, n),
        "design_u": rng.random(n),
    }

    purchases_created = np.repeat(batches, n_purchases)
    purchases = _orders(rng, purchases_created + rng.integers(0, 4, purchases_created.size))
    n = purchases_created.size
    purchases |= {
        "item_code": rng.integers(0, len(static.ITEM_CODE_ALPHABET), (n, 7), dtype=np.uint8),
        "item_quantity": rng.integers(1, 1_000, n),
        "price_cents": rng.integers(332, 99_908, n),
    }

    n = rng.poisson(rates.designs)
    design_created = _arrival_ms(rng, day_open, n)
    designs = {
        "created": design_created,
        "name": rng.integers(0, len(static.DESIGN_NAMES), n),
        "location": rng.integers(0, len(static.FILE_LOCATIONS), n),
        "file_day": design_created // DAY_MS - rng.integers(0, 730, n),
        "suffix": rng.integers(0, len(static.FILE_SUFFIX_ALPHABET), (n, 4), dtype=np.uint8),
    }

    n = rng.poisson(rates.change_fraction * (rates.sales + rates.purchases) * scale)
    changed = _arrival_ms(rng, day_open, n)
    changes = {
        "t": changed,
        "is_sale": rng.random(n) < rates.sales / (rates.sales + rates.purchases),
        "target_u": rng.random(n),
        "delivery_day": changed // DAY_MS + rng.integers(1, 29, n),
    }
    return Events(designs=designs, sales=sales, purchases=purchases, changes=changes)


def empty_events() -> Events:
    """No activity, with the same array dtypes and shapes as a real day."""
    return draw_day(0, 0.0, _A_MONDAY, Rates(designs=0.0))


def _concat(parts: list[Arrays]) -> Arrays:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _between(arrays: Arrays, key: str, lo_ms: int, hi_ms: int) -> Arrays:
    keep = (arrays[key] > lo_ms) & (arrays[key] <= hi_ms)
    return {k: v[keep] for k, v in arrays.items()}


def draw_window(seed: int, scale: float, lo_ms: int, hi_ms: int, rates: Rates = RATES) -> Events:
    """The activity strictly after `lo_ms` up to and including `hi_ms`."""
    days = [draw_day(seed, scale, d, rates) for d in range(lo_ms // DAY_MS, hi_ms // DAY_MS + 1)]
    days = days or [empty_events()]
    return Events(
        designs=_between(_concat([d.designs for d in days]), "created", lo_ms, hi_ms),
        sales=_between(_concat([d.sales for d in days]), "created", lo_ms, hi_ms),
        purchases=_between(_concat([d.purchases for d in days]), "created", lo_ms, hi_ms),
        changes=_between(_concat([d.changes for d in days]), "t", lo_ms, hi_ms),
    )
