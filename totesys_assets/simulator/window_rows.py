"""Turn a window's drawn events into table rows: ids, links, payments, flips and changes.

The same code builds two years of history for `seed_history` and five minutes for `advance`.
Rows are numbered in created_at order from the database's next id, so a history built in one go
and one built in many small windows end up identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from totesys_assets.simulator import static_data as static
from totesys_assets.simulator.activity import CHANGE_HORIZON_MS, Events
from totesys_assets.simulator.timeline import DAY_MS, payment_run_ms, weekday
from totesys_assets.specs import SOURCE_TABLES, TIMESTAMP_DTYPE, Kind

ORDER_TABLES = ("sales_order", "purchase_order")


@dataclass
class SourceState:
    """What the database already holds that a window's new rows depend on."""

    next_id: dict[str, int]  # table -> first free id
    design_count: int  # designs 1..n exist; orders pick among those created before them
    # Orders created inside the change horizon before the window: (ids, created ms), by created_at.
    recent_orders: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class WindowRows:
    """New rows (final state at the window's end) and changes to rows that already exist."""

    inserts: dict[str, pl.DataFrame]
    # table -> frame(id, agreed_delivery_date, last_updated) of existing orders changed in place
    order_updates: dict[str, pl.DataFrame]
    # payment runs inside the window: (payment_date text, run time) for existing unpaid payments
    payment_runs: pl.DataFrame


def _ts(ms: np.ndarray) -> pl.Series:
    return pl.Series(ms, dtype=pl.Int64).cast(TIMESTAMP_DTYPE)


def _day_text(days: np.ndarray) -> pl.Series:
    return pl.Series(days, dtype=pl.Int32).cast(pl.Date).dt.to_string("%Y-%m-%d")


def money_text(cents: pl.Expr) -> pl.Expr:
    """Exact numeric(10,2) text from integer cents (no float ever touches money); keeps the name."""
    return pl.format("{}.{}", cents // 100, (cents % 100).cast(pl.String).str.zfill(2)).alias(
        cents.meta.output_name()
    )


def _codes_text(codes: np.ndarray, alphabet: bytes) -> pl.Series:
    letters = np.frombuffer(alphabet, dtype=np.uint8)[codes]
    raw = np.ascontiguousarray(letters).view(f"S{codes.shape[1]}").ravel()
    return pl.Series(raw, dtype=pl.Binary).cast(pl.String)


def _sorted(arrays: dict[str, np.ndarray], key: str = "created") -> dict[str, np.ndarray]:
    order = np.argsort(arrays[key], kind="stable")
    return {k: v[order] for k, v in arrays.items()}


def _designs(ev: dict[str, np.ndarray], first_id: int) -> pl.DataFrame:
    n = ev["created"].size
    frame = pl.DataFrame(
        {
            "design_id": np.arange(first_id, first_id + n, dtype=np.int64),
            "created_at": _ts(ev["created"]),
            "design_name": pl.Series(static.DESIGN_NAMES).gather(ev["name"]),
            "file_location": pl.Series(static.FILE_LOCATIONS).gather(ev["location"]),
            "file_day": pl.Series(ev["file_day"], dtype=pl.Int32).cast(pl.Date),
            "suffix": _codes_text(ev["suffix"], static.FILE_SUFFIX_ALPHABET),
        }
    )
    # e.g. "wooden-20201128-jdvi.json", like the real catalogue
    file_name = pl.format(
        "{}-{}-{}.json",
        pl.col("design_name").str.to_lowercase(),
        pl.col("file_day").dt.to_string("%Y%m%d"),
        pl.col("suffix"),
    )
    return frame.with_columns(
        file_name.alias("file_name"), pl.col("created_at").alias("last_updated")
    ).select(SOURCE_TABLES["design"].column_names)


def _order_frame(
    table: str, orders: dict[str, np.ndarray], ids: np.ndarray, extra: dict[str, pl.Series | np.ndarray]
) -> pl.DataFrame:
    spec = SOURCE_TABLES[table]
    cols: dict[str, pl.Series | np.ndarray] = {
        spec.primary_key: ids,
        "created_at": _ts(orders["created"]),
        "last_updated": _ts(orders["last_updated"]),
        "staff_id": orders["staff_id"],
        "counterparty_id": orders["counterparty_id"],
        "currency_id": orders["currency_id"],
        "agreed_delivery_date": _day_text(orders["delivery_day"]),
        "agreed_payment_date": _day_text(orders["payment_day"]),
        "agreed_delivery_location_id": orders["location_id"],
        **extra,
    }
    money = next(c.name for c in spec.columns if c.kind is Kind.MONEY)
    return pl.DataFrame(cols).with_columns(money_text(pl.col(money))).select(spec.column_names)


def _pick_changed_orders(
    ev: Events, state: SourceState, new_ids: dict[str, np.ndarray], new_created: dict[str, np.ndarray]
) -> dict[str, tuple[Any, ...]]:
    """Pick each change's order among those created in the 7 days before it; the latest change wins.

    Returns table -> (order ids, new delivery day, change time), one entry per changed order.
    """
    out = {}
    for table, is_sale in (("sales_order", True), ("purchase_order", False)):
        none = (np.empty(0, np.int64), np.empty(0, np.int64))
        old_ids, old_created = state.recent_orders.get(table, none)
        pool_ids = np.concatenate([old_ids, new_ids[table]])
        pool_created = np.concatenate([old_created, new_created[table]])
        pick = ev.changes["is_sale"] == is_sale
        t = ev.changes["t"][pick]
        lo = np.searchsorted(pool_created, t - CHANGE_HORIZON_MS, side="left")
        hi = np.searchsorted(pool_created, t, side="left")
        ok = hi > lo
        idx = lo[ok] + np.floor(ev.changes["target_u"][pick][ok] * (hi - lo)[ok]).astype(np.int64)
        ids, days, times = pool_ids[idx], ev.changes["delivery_day"][pick][ok], t[ok]
        order = np.lexsort((times, ids))
        ids, days, times = ids[order], days[order], times[order]
        last = np.r_[ids[1:] != ids[:-1], True] if ids.size else np.empty(0, bool)
        out[table] = (ids[last], days[last], times[last])
    return out


def _apply_changes(
    orders: dict[str, np.ndarray], changed: tuple[np.ndarray, ...], first_new_id: int
) -> pl.DataFrame:
    """Write changes into the new orders (in place); return those to stored orders as updates."""
    ids, days, times = changed
    is_new = ids >= first_new_id
    pos = ids[is_new] - first_new_id
    orders["last_updated"] = orders["created"].copy()
    orders["delivery_day"][pos], orders["last_updated"][pos] = days[is_new], times[is_new]
    old = ~is_new
    return pl.DataFrame(
        {"id": ids[old], "agreed_delivery_date": _day_text(days[old]), "last_updated": _ts(times[old])}
    )


def build_window(ev: Events, state: SourceState, *, seed: int, lo_ms: int, hi_ms: int) -> WindowRows:
    """Rows for everything that happens after `lo_ms` up to `hi_ms`, in its state at `hi_ms`."""
    designs, sales, purchases = _sorted(ev.designs), _sorted(ev.sales), _sorted(ev.purchases)
    orders = {"sales_order": sales, "purchase_order": purchases}
    ids = {t: state.next_id[t] + np.arange(o["created"].size, dtype=np.int64) for t, o in orders.items()}
    changed = _pick_changed_orders(ev, state, ids, {t: o["created"] for t, o in orders.items()})
    order_updates = {t: _apply_changes(o, changed[t], state.next_id[t]) for t, o in orders.items()}

    # An order may use any design created before it.
    n_designs = state.design_count + np.searchsorted(designs["created"], sales["created"], side="right")
    inserts = {
        "design": _designs(designs, state.next_id["design"]),
        "sales_order": _order_frame(
            "sales_order",
            sales,
            ids["sales_order"],
            {
                "design_id": np.floor(sales["design_u"] * n_designs).astype(np.int64) + 1,
                "units_sold": sales["units_sold"],
                "unit_price": sales["price_cents"],
            },
        ),
        "purchase_order": _order_frame(
            "purchase_order",
            purchases,
            ids["purchase_order"],
            {
                "item_code": _codes_text(purchases["item_code"], static.ITEM_CODE_ALPHABET),
                "item_quantity": purchases["item_quantity"],
                "item_unit_price": purchases["price_cents"],
            },
        ),
        **_transactions_and_payments(sales, purchases, ids, seed=seed, hi_ms=hi_ms, state=state),
    }
    return WindowRows(
        inserts=inserts, order_updates=order_updates, payment_runs=payment_runs(seed, lo_ms, hi_ms)
    )


def _transactions_and_payments(
    sales: dict[str, np.ndarray],
    purchases: dict[str, np.ndarray],
    ids: dict[str, np.ndarray],
    *,
    seed: int,
    hi_ms: int,
    state: SourceState,
) -> dict[str, pl.DataFrame]:
    """One transaction and one payment per order, numbered by (created_at, sale first, order id)."""
    is_sale = np.r_[np.ones(sales["created"].size, bool), np.zeros(purchases["created"].size, bool)]

    def both(key: str) -> np.ndarray:
        return np.concatenate([sales[key], purchases[key]])

    created, order_id = both("created"), np.concatenate([ids["sales_order"], ids["purchase_order"]])
    order = np.lexsort((order_id, ~is_sale, created))
    is_sale, created, order_id = is_sale[order], created[order], order_id[order]
    n = created.size
    tx_ids = state.next_id["transaction"] + np.arange(n, dtype=np.int64)
    transaction = (
        pl.DataFrame(
            {"transaction_id": tx_ids, "is_sale": is_sale, "order_id": order_id, "created": _ts(created)}
        )
        .with_columns(
            pl.when("is_sale").then(pl.lit("SALE")).otherwise(pl.lit("PURCHASE")).alias("transaction_type"),
            pl.when("is_sale").then("order_id").alias("sales_order_id"),
            pl.when(~pl.col("is_sale")).then("order_id").alias("purchase_order_id"),
            pl.col("created").alias("created_at"),
            pl.col("created").alias("last_updated"),
        )
        .select(SOURCE_TABLES["transaction"].column_names)
    )

    pay_day = both("payment_day")[order]
    run = payment_run_ms(seed, pay_day)
    paid = (weekday(pay_day) < 5) & (run > created) & (run <= hi_ms)
    quantity = np.concatenate([sales["units_sold"], purchases["item_quantity"]])[order]
    cents = quantity * both("price_cents")[order]
    payment = pl.DataFrame(
        {
            "payment_id": state.next_id["payment"] + np.arange(n, dtype=np.int64),
            "created_at": _ts(created),
            "last_updated": _ts(np.where(paid, run, created)),
            "transaction_id": tx_ids,
            "counterparty_id": both("counterparty_id")[order],
            "payment_amount": cents,
            "currency_id": both("currency_id")[order],
            "payment_type_id": np.where(is_sale, static.SALES_RECEIPT_ID, static.PURCHASE_PAYMENT_ID),
            "paid": paid,
            "payment_date": _day_text(pay_day),
            "company_ac_number": both("company_ac")[order],
            "counterparty_ac_number": both("counterparty_ac")[order],
        }
    ).with_columns(money_text(pl.col("payment_amount")))
    return {"transaction": transaction, "payment": payment.select(SOURCE_TABLES["payment"].column_names)}


def payment_runs(seed: int, lo_ms: int, hi_ms: int) -> pl.DataFrame:
    """The weekday payment runs (07:55:11.xxx) after `lo_ms` up to `hi_ms`."""
    days = np.arange(lo_ms // DAY_MS, hi_ms // DAY_MS + 1, dtype=np.int64)
    days = days[weekday(days) < 5]
    run = payment_run_ms(seed, days)
    keep = (run > lo_ms) & (run <= hi_ms)
    return pl.DataFrame({"payment_date": _day_text(days[keep]), "run_at": _ts(run[keep])})
