"""The demo pace: on the embedded default the source moves every minute, and never anywhere else."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from totesys_assets.settings import DEFAULT_DEMO_RATE, demo_rate
from totesys_assets.simulator.demo_pace import demo_tick, orders_for
from totesys_assets_tests.helpers import last_json_line, python_in_fresh_env


def _count(sim, table: str, where: str = "") -> int:
    with sim.connect() as conn:
        return conn.execute(f"SELECT count(*) FROM {table} {where}").fetchone()[0]  # noqa: S608 (fixed names)


def test_each_simulated_minute_at_the_default_rate_brings_new_orders_paid_payments_and_changes(pg):
    url, sim = pg.new_source("demo_src", seed=5, days=10)
    start = sim.now() + timedelta(minutes=1)
    before = {t: _count(sim, t) for t in ("sales_order", "transaction", "payment")}
    ticks = [demo_tick(sim, rate=DEFAULT_DEMO_RATE, at=start + timedelta(minutes=m)) for m in range(10)]

    assert all(len(t.orders) >= 1 for t in ticks), [t.summary() for t in ticks]
    new = sum(len(t.orders) for t in ticks)
    assert new == 10 * DEFAULT_DEMO_RATE
    # Each order comes with its transaction and its (unpaid) payment, stamped at the tick.
    assert {t: _count(sim, t) - before[t] for t in before} == dict.fromkeys(before, new)
    with sim.connect() as conn:
        stamps = conn.execute(
            "SELECT min(last_updated), max(last_updated) FROM sales_order WHERE sales_order_id = ANY(%s)",
            ([o for t in ticks for o in t.orders],),
        ).fetchone()
    assert start <= stamps[0] <= stamps[1] < start + timedelta(minutes=10)
    # Due payments get paid, a few a minute, and some orders change in place with last_updated bumped.
    assert 0 < sum(t.paid for t in ticks) <= sum(max(len(t.orders), 1) for t in ticks)
    changed = [o for t in ticks for o in t.changed]
    assert changed
    with sim.connect() as conn:
        bumped = conn.execute(
            "SELECT count(*) FROM sales_order WHERE sales_order_id = ANY(%s) AND last_updated >= %s",
            (changed, start),
        ).fetchone()[0]
    assert bumped == len(set(changed))


def test_orders_for_a_fractional_rate_average_out():
    rng = np.random.default_rng(1)
    draws = [orders_for(0.5, 1.0, rng) for _ in range(2000)]
    assert set(draws) == {0, 1} and 900 < sum(draws) < 1100
    assert orders_for(0, 5, rng) == 0 and orders_for(3, 1, rng) == 3


def test_demo_rate_setting(monkeypatch):
    monkeypatch.delenv("TOTESYS_DEMO_RATE", raising=False)
    assert demo_rate() == DEFAULT_DEMO_RATE
    monkeypatch.setenv("TOTESYS_DEMO_RATE", "0.5")
    assert demo_rate() == 0.5
    for bad in ("fast", "-1"):
        monkeypatch.setenv("TOTESYS_DEMO_RATE", bad)
        with pytest.raises(ValueError, match="TOTESYS_DEMO_RATE"):
            demo_rate()


def _schedules(**env: str) -> dict[str, str]:
    code = (
        "import json, totesys_assets.definitions as d; "
        "print(json.dumps({s.name: s.default_status.value for s in d.defs.schedules}))"
    )
    return last_json_line(python_in_fresh_env(code, **env))


def test_demo_activity_runs_by_default_on_the_embedded_demo_only(tmp_path):
    home = str(tmp_path / "home")
    assert _schedules(TOTESYS_HOME=home) == {"raw_refresh_schedule": "RUNNING", "demo_activity": "RUNNING"}
    assert _schedules(TOTESYS_HOME=home, TOTESYS_DEMO_RATE="0") == {"raw_refresh_schedule": "RUNNING"}
    configured = _schedules(TOTESYS_HOME=home, TOTESYS_DB_URL="postgresql://reader@db.example/totesys")
    assert configured == {"raw_refresh_schedule": "RUNNING"}
