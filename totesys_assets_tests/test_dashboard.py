# ruff: noqa: S608 - the SQL here is assembled from the test's own constants; values are bound as parameters
"""The dashboard (Streamlit, `totesys_assets.dashboard`) on a warehouse loaded through the pipeline.

The warehouse is the real 2024-11-15 export (`real_export_warehouse`), copied, plus one more
business day run through the pipeline (raw → facts): sales order 2 changed twice (three
versions) and three unpaid payments paid. Every page runs in `streamlit.testing.v1.AppTest` (no
browser) and the numbers behind each chart are compared with SQL written here, over the fact
tables themselves (the newest version per id by a window function, not the dashboard's views).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from totesys_assets.dashboard import charts as blocks
from totesys_assets.dashboard import cli, ui
from totesys_assets.dashboard import queries as q
from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.specs import WAREHOUSE_TABLES
from totesys_assets.star.assets import star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.helpers import materialize_range

pytestmark = pytest.mark.reference

APP = Path(q.__file__).with_name("app.py")
ALL = [*raw_assets, *star_assets, *star_checks]
CHANGE_DAY = "2024-11-16"
CHANGED_ORDER = 2
CODES = ("EUR", "GBP", "USD")
KOREA = "Democratic People's Republic of Korea"  # a real delivery country with a quote in it


@dataclass
class DashboardWarehouse:
    url: str
    paid_now: list[int]  # payments that were unpaid in the export and are paid on CHANGE_DAY


@pytest.fixture(scope="module")
def dashboard_wh(real_export_warehouse, pg, s3_server) -> DashboardWarehouse:
    """A copy of the real-export warehouse plus CHANGE_DAY loaded through the pipeline."""
    source = pg.clone_db(real_export_warehouse.lake.source_url, "dash_src")
    warehouse = pg.clone_db(real_export_warehouse.url, "dash_wh")
    bucket = s3_server.new_bucket("dash")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOTESYS_DB_URL", source)
        mp.setenv("TOTESYS_LAKE_URL", f"s3://{bucket}/totes")
        mp.setenv("WAREHOUSE_DB_URL", warehouse)
        resources = build_resources()
        raw, facts = dg.AssetSelection.groups("raw"), dg.AssetSelection.groups("facts")
        with psycopg.connect(source) as conn:
            conn.execute(
                "UPDATE sales_order SET units_sold = units_sold + 1000, last_updated = %s WHERE sales_order_id = %s",
                (datetime(2024, 11, 16, 9, 0), CHANGED_ORDER),
            )
            paid = [
                r[0] for r in conn.execute("SELECT payment_id FROM payment WHERE NOT paid ORDER BY 1 LIMIT 3")
            ]
            conn.execute(
                "UPDATE payment SET paid = true, last_updated = %s WHERE payment_id = ANY(%s)",
                (datetime(2024, 11, 16, 9, 30), paid),
            )
        assert materialize_range(ALL, resources, CHANGE_DAY, CHANGE_DAY, selection=raw).success
        with psycopg.connect(source) as conn:  # a second change of the same order, extracted separately
            conn.execute(
                "UPDATE sales_order SET unit_price = 4.25, agreed_delivery_date = '2024-11-29', last_updated = %s "
                "WHERE sales_order_id = %s",
                (datetime(2024, 11, 16, 11, 30), CHANGED_ORDER),
            )
        assert materialize_range(ALL, resources, CHANGE_DAY, CHANGE_DAY, selection=raw).success
        assert materialize_range(ALL, resources, CHANGE_DAY, CHANGE_DAY, selection=facts).success
    yield DashboardWarehouse(url=warehouse, paid_now=paid)
    q.close_all()


# --- independent SQL --------------------------------------------------------------------------------


def sql(url: str, query: str, params: tuple | dict = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def current(fact: str, natural_id: str, record_id: str) -> str:
    """The latest captured version per id, computed here with a window function (not the *_current
    view): by capture time, then last_updated, then record id."""
    return (
        f"(SELECT * FROM (SELECT f.*, row_number() OVER (PARTITION BY {natural_id} ORDER BY captured_at DESC, "
        f"last_updated_date DESC, last_updated_time DESC, {record_id} DESC) AS rn FROM {fact} f) v WHERE rn = 1)"
    )


SALES = current("fact_sales_order", "sales_order_id", "sales_record_id")
PURCHASES = current("fact_purchase_order", "purchase_order_id", "purchase_record_id")
PAYMENTS = current("fact_payment", "payment_id", "payment_record_id")
REVENUE = "f.units_sold * f.unit_price"
SPEND = "f.item_quantity * f.item_unit_price"


def amount_columns(amount: str) -> str:
    return ", ".join(
        f"coalesce(sum({amount}) FILTER (WHERE c.currency_code = '{code}'), 0)" for code in CODES
    )


def where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


# --- reading the app ------------------------------------------------------------------------------------


def run_app(monkeypatch, url: str, page: str | None = None) -> AppTest:
    monkeypatch.setenv("WAREHOUSE_DB_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _plain(value):
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    if isinstance(value, datetime) and value.time() == datetime.min.time() and value.tzinfo is None:
        return value.date()
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        stamp = value.to_pydatetime()
        return stamp.date() if stamp.time() == datetime.min.time() else stamp
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def table(at: AppTest, key: str) -> list[tuple]:
    """The rows of the table the app shows under `key` (plain Python values)."""
    frame = at.get_by_key(key).dataframe[0].value
    return [tuple(_plain(v) for v in row) for row in frame.itertuples(index=False)]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(at: AppTest) -> str:
    """Every text the app shows (alerts, markdown, captions, metrics, labels)."""
    out = []
    for node in at._tree:
        for attr in ("value", "label", "body"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                out.append(value)
        proto = getattr(node, "proto", None)
        body = getattr(proto, "body", None)
        if isinstance(body, str):
            out.append(body)
    return "\n".join(out)


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


# --- every page renders, and its numbers are the warehouse's ------------------------------------------------


def test_sales_page_matches_sql(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh)
    assert charts(at) == 5
    (count, units), = sql(wh, f"SELECT count(*), sum(units_sold) FROM {SALES} f")  # fmt: skip
    shown = metrics(at)
    assert shown["Current sales orders"] == f"{count:,}" and count == 11187
    assert shown["Units sold"] == blocks.compact(units) == "563.63M"  # the exact figure is in the table
    by_currency = sql(
        wh,
        f"SELECT c.currency_code, count(*), sum(units_sold), sum({REVENUE}) FROM {SALES} f "
        "JOIN dim_currency c USING (currency_id) GROUP BY 1 ORDER BY 1",
    )
    assert table(at, "sales_by_currency") == by_currency
    assert shown["Revenue GBP"] == blocks.money("GBP", by_currency[1][3])
    assert table(at, "sales_by_month") == sql(
        wh,
        f"SELECT date_trunc('month', created_date)::date, c.currency_code, count(*), sum(units_sold), sum({REVENUE}) "
        f"FROM {SALES} f JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert table(at, "sales_top_designs") == sql(
        wh,
        f"SELECT f.design_id, d.design_name, count(*), sum(units_sold), {amount_columns(REVENUE)} FROM {SALES} f "
        "JOIN dim_currency c USING (currency_id) JOIN dim_design d USING (design_id) "
        "GROUP BY 1, 2 ORDER BY 4 DESC, 1 LIMIT 10",
    )
    assert table(at, "sales_top_counterparties") == sql(
        wh,
        f"SELECT f.counterparty_id, p.counterparty_legal_name, count(*), sum(units_sold), {amount_columns(REVENUE)} "
        f"FROM {SALES} f JOIN dim_currency c USING (currency_id) JOIN dim_counterparty p USING (counterparty_id) "
        "GROUP BY 1, 2 ORDER BY 4 DESC, 1 LIMIT 10",
    )
    assert table(at, "sales_by_location") == sql(
        wh,
        f"SELECT l.country, l.city, count(*), sum(units_sold), {amount_columns(REVENUE)} FROM {SALES} f "
        "JOIN dim_currency c USING (currency_id) JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2",
    )
    assert table(at, "sales_by_staff") == sql(
        wh,
        f"SELECT f.sales_staff_id, s.first_name || ' ' || s.last_name, s.department_name, count(*), sum(units_sold), "
        f"{amount_columns(REVENUE)} FROM {SALES} f JOIN dim_currency c USING (currency_id) "
        "JOIN dim_staff s ON s.staff_id = f.sales_staff_id GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1",
    )
    # The freshness banner: the newest version is CHANGE_DAY's, long past the 30-minute promise.
    assert "2024-11-16 11:30:00 UTC" in at.warning[0].value
    assert "longer than the 30-minute freshness promise" in at.warning[0].value


def test_purchases_page_matches_sql(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh, "views/purchases.py")
    assert charts(at) == 3
    (count, items), = sql(wh, f"SELECT count(*), sum(item_quantity) FROM {PURCHASES} f")  # fmt: skip
    assert metrics(at)["Current purchase orders"] == f"{count:,}" and count == 4649
    assert metrics(at)["Items bought"] == blocks.compact(items)
    assert table(at, "purchases_by_currency") == sql(
        wh,
        f"SELECT c.currency_code, count(*), sum(item_quantity), sum({SPEND}) FROM {PURCHASES} f "
        "JOIN dim_currency c USING (currency_id) GROUP BY 1 ORDER BY 1",
    )
    assert table(at, "purchases_by_month") == sql(
        wh,
        f"SELECT date_trunc('month', created_date)::date, c.currency_code, count(*), sum(item_quantity), sum({SPEND}) "
        f"FROM {PURCHASES} f JOIN dim_currency c USING (currency_id) GROUP BY 1, 2 ORDER BY 1, 2",
    )
    assert table(at, "purchases_by_supplier") == sql(
        wh,
        f"SELECT f.counterparty_id, p.counterparty_legal_name, count(*), sum(item_quantity), {amount_columns(SPEND)} "
        f"FROM {PURCHASES} f JOIN dim_currency c USING (currency_id) JOIN dim_counterparty p USING (counterparty_id) "
        "GROUP BY 1, 2 ORDER BY 4 DESC, 1",
    )
    assert table(at, "purchases_by_staff") == sql(
        wh,
        f"SELECT f.staff_id, s.first_name || ' ' || s.last_name, s.department_name, count(*), sum(item_quantity), "
        f"{amount_columns(SPEND)} FROM {PURCHASES} f JOIN dim_currency c USING (currency_id) "
        "JOIN dim_staff s USING (staff_id) GROUP BY 1, 2, 3 ORDER BY 5 DESC, 1",
    )


def test_payments_page_matches_sql(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh, "views/payments.py")
    assert charts(at) == 1
    today = "(now() AT TIME ZONE 'UTC')::date"
    assert table(at, "payments_by_currency") == sql(
        wh,
        f"SELECT c.currency_code, count(*), coalesce(sum(payment_amount) FILTER (WHERE paid), 0), "
        f"coalesce(sum(payment_amount) FILTER (WHERE NOT paid), 0) FROM {PAYMENTS} f "
        "JOIN dim_currency c USING (currency_id) GROUP BY 1 ORDER BY 1",
    )
    assert table(at, "payments_by_month") == sql(
        wh,
        "SELECT date_trunc('month', payment_date)::date, t.payment_type_name, c.currency_code, "
        f"CASE WHEN paid THEN 'paid' ELSE 'unpaid' END, count(*), sum(payment_amount) FROM {PAYMENTS} f "
        "JOIN dim_currency c USING (currency_id) JOIN dim_payment_type t USING (payment_type_id) "
        "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    ((overdue, unpaid_export),) = sql(  # fmt: skip
        wh,
        f"SELECT count(*) FILTER (WHERE payment_date < {today}), count(*) FROM {PAYMENTS} f WHERE NOT paid",
    )
    assert metrics(at)["Overdue payments"] == f"{overdue:,}"
    # The export had 6,188 unpaid payments; three were paid on CHANGE_DAY.
    assert unpaid_export == 6188 - 3
    assert table(at, "payments_overdue_totals") == sql(
        wh,
        f"SELECT c.currency_code, count(*), sum(payment_amount) FROM {PAYMENTS} f JOIN dim_currency c "
        f"USING (currency_id) WHERE NOT paid AND payment_date < {today} GROUP BY 1 ORDER BY 1",
    )
    expected = sql(
        wh,
        f"SELECT f.payment_id, f.payment_date, ({today} - f.payment_date), t.payment_type_name, "
        "p.counterparty_legal_name, c.currency_code, f.payment_amount, f.transaction_id "
        f"FROM {PAYMENTS} f JOIN dim_currency c USING (currency_id) JOIN dim_payment_type t USING (payment_type_id) "
        f"JOIN dim_counterparty p USING (counterparty_id) WHERE NOT paid AND payment_date < {today} "
        "ORDER BY payment_date, payment_id LIMIT %s",
        (q.OVERDUE_ROWS,),
    )
    assert table(at, "payments_overdue") == expected
    assert not set(dashboard_wh.paid_now) & {row[0] for row in table(at, "payments_overdue")}
    # Sorting by amount is another order of the same overdue payments.
    at.selectbox(key="overdue_sort").set_value("largest amount first").run()
    by_amount = table(at, "payments_overdue")
    assert [r[6] for r in by_amount] == sorted((r[6] for r in by_amount), reverse=True)
    assert (
        by_amount[0][6]
        == sql(wh, f"SELECT max(payment_amount) FROM {PAYMENTS} f WHERE NOT paid AND payment_date < {today}")[
            0
        ][0]
    )


def test_history_page_shows_every_version_and_what_changed(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh, "views/history.py")
    assert charts(at) == 1
    # The most recently changed sales order is the default: order 2, three versions.
    assert at.number_input(key="history_id_sales").value == CHANGED_ORDER
    versions = table(at, "history_versions")
    expected = sql(
        wh,
        "SELECT sales_record_id, last_updated_date + last_updated_time, units_sold, unit_price, agreed_delivery_date "
        "FROM fact_sales_order WHERE sales_order_id = %s ORDER BY last_updated_date, last_updated_time",
        (CHANGED_ORDER,),
    )
    assert len(expected) == 3
    columns = list(at.get_by_key("history_versions").dataframe[0].value.columns)
    pick = [
        columns.index(c)
        for c in ("record_id", "last_updated", "units_sold", "unit_price", "agreed_delivery_date")
    ]
    assert [tuple(row[i] for i in pick) for row in versions] == expected
    changes = [row[columns.index("changes")] for row in versions]
    assert changes[0] == "first version"
    assert changes[1] == f"units_sold: {expected[0][2]} → {expected[1][2]}"
    assert changes[2] == (
        f"unit_price: {expected[1][3]} → 4.25; agreed_delivery_date: {expected[1][4]} → 2024-11-29"
    )
    # A payment paid on CHANGE_DAY: two versions, `paid` flipped.
    at.radio(key="history_kind").set_value(q.PAYMENTS).run()
    at.number_input(key="history_id_payments").set_value(dashboard_wh.paid_now[0]).run()
    rows = table(at, "history_versions")
    columns = list(at.get_by_key("history_versions").dataframe[0].value.columns)
    assert [r[columns.index("paid")] for r in rows] == [False, True]
    assert rows[1][columns.index("changes")] == "paid: False → True"
    # A link to one payment's history: /history?kind=payments&id=<id>
    monkeypatch.setenv("WAREHOUSE_DB_URL", wh)
    linked = AppTest.from_file(str(APP), default_timeout=120)
    linked.query_params["kind"] = q.PAYMENTS
    linked.query_params["id"] = str(dashboard_wh.paid_now[1])
    linked.run()
    linked.switch_page("views/history.py").run()
    assert not linked.exception
    assert linked.radio(key="history_kind").value == q.PAYMENTS
    assert linked.number_input(key="history_id_payments").value == dashboard_wh.paid_now[1]
    assert len(table(linked, "history_versions")) == 2
    # An id the warehouse does not hold.
    at.number_input(key="history_id_payments").set_value(999_999).run()
    assert "holds no payment with id 999999" in at.info[0].value


# --- filters --------------------------------------------------------------------------------------------


def test_date_filter_gives_the_2023_revenue_per_currency(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh)
    at.date_input(key=ui.DATES).set_value((date(2023, 1, 1), date(2023, 12, 31))).run()
    revenue_2023 = sql(
        wh,
        f"SELECT c.currency_code, count(*), sum(units_sold), sum({REVENUE}) FROM {SALES} f "
        "JOIN dim_currency c USING (currency_id) WHERE created_date BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
        (date(2023, 1, 1), date(2023, 12, 31)),
    )
    assert table(at, "sales_by_currency") == revenue_2023
    assert sum(r[1] for r in revenue_2023) < 11187
    months = table(at, "sales_by_month")
    assert {r[0].year for r in months} == {2023} and len({r[0] for r in months}) == 12
    # The filter carries over to the other pages: the payments of 2023 (by payment date).
    at.switch_page("views/payments.py").run()
    assert table(at, "payments_by_currency") == sql(
        wh,
        f"SELECT c.currency_code, count(*), coalesce(sum(payment_amount) FILTER (WHERE paid), 0), "
        f"coalesce(sum(payment_amount) FILTER (WHERE NOT paid), 0) FROM {PAYMENTS} f "
        "JOIN dim_currency c USING (currency_id) WHERE payment_date BETWEEN %s AND %s GROUP BY 1 ORDER BY 1",
        (date(2023, 1, 1), date(2023, 12, 31)),
    )


def test_currency_and_counterparty_filters(dashboard_wh, monkeypatch):
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh, "views/purchases.py")
    (supplier, name), = sql(wh, "SELECT counterparty_id, counterparty_legal_name FROM dim_counterparty ORDER BY 2 LIMIT 1")  # fmt: skip
    at.multiselect(key=ui.CURRENCIES).set_value(["GBP"]).run()
    at.multiselect(key=ui.COUNTERPARTIES).set_value([supplier]).run()
    assert not at.exception
    expected = sql(
        wh,
        f"SELECT c.currency_code, count(*), sum(item_quantity), sum({SPEND}) FROM {PURCHASES} f "
        "JOIN dim_currency c USING (currency_id) WHERE c.currency_code = %s AND f.counterparty_id = %s "
        "GROUP BY 1 ORDER BY 1",
        ("GBP", supplier),
    )
    assert table(at, "purchases_by_currency") == expected and expected
    suppliers = table(at, "purchases_by_supplier")
    assert [r[:2] for r in suppliers] == [(supplier, name)]
    assert metrics(at)["Current purchase orders"] == f"{expected[0][1]:,}"
    assert "Spend EUR" not in metrics(at)
    # Clearing the filters gives every purchase again.
    at.multiselect(key=ui.CURRENCIES).set_value([]).run()
    at.multiselect(key=ui.COUNTERPARTIES).set_value([]).run()
    assert metrics(at)["Current purchase orders"] == "4,649"


def test_a_filter_value_with_a_quote_is_data(dashboard_wh, monkeypatch):
    """Filter values never become SQL text: a quote in a real country name, and an injection attempt."""
    wh = dashboard_wh.url
    at = run_app(monkeypatch, wh)
    at.multiselect(key=ui.COUNTRIES).set_value([KOREA]).run()
    assert not at.exception
    expected = sql(
        wh,
        f"SELECT l.country, l.city, count(*), sum(units_sold), {amount_columns(REVENUE)} FROM {SALES} f "
        "JOIN dim_currency c USING (currency_id) JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "WHERE l.country = %s GROUP BY 1, 2 ORDER BY 4 DESC, 1, 2",
        (KOREA,),
    )
    assert expected and table(at, "sales_by_location") == expected
    assert metrics(at)["Current sales orders"] == f"{expected[0][2]:,}"
    # Through the query layer: a value built to break out of a quoted string matches nothing.
    snap = q.LiveWarehouse(wh).snapshot()
    hostile = q.Filters(currencies=("GBP' OR '1'='1",), countries=("x'); DROP TABLE dim_location; --",))
    assert q.by_currency(snap, q.SALES, hostile).height == 0
    assert q.by_location(snap, q.SALES, hostile).height == 0
    assert sql(wh, "SELECT count(*) FROM dim_location")[0][0] == 30


# --- the query layer: current state, live refresh, read-only session -----------------------------------------


def _current_sales(url: str) -> list[tuple]:
    """(id, record id, units) of every sales order's newest version, by SQL over the table."""
    return sql(url, f"SELECT sales_order_id, sales_record_id, units_sold FROM {SALES} f ORDER BY 1")


def _held_sales(snap: q.Snapshot) -> list[tuple]:
    return snap.facts[q.SALES].sort("sales_order_id").select("sales_order_id", "record_id", "units").rows()


def insert_version(conn: psycopg.Connection, order_id: int, at: datetime, units: int) -> None:
    """A new version of a sales order, written straight into the fact (as a load would append it)."""
    spec = WAREHOUSE_TABLES["fact_sales_order"]
    values = {
        "last_updated_date": "%(at)s::date",
        "last_updated_time": "%(at)s::time",
        "units_sold": "%(units)s",
        # capture columns, where the warehouse has them: a distinct version, captured now
        "version_hash": "md5(random()::text)",
        "captured_at": "(now() AT TIME ZONE 'UTC')",
    }
    columns = spec.insert_columns
    conn.execute(
        f"INSERT INTO fact_sales_order ({', '.join(columns)}) SELECT {', '.join(values.get(c, c) for c in columns)} "
        "FROM fact_sales_order_current WHERE sales_order_id = %(id)s",
        {"at": at, "units": units, "id": order_id},
    )


def test_live_refresh_reads_only_new_versions_and_stays_exact(real_export_warehouse, pg, monkeypatch):
    wh = pg.clone_db(real_export_warehouse.url, "dash_live")
    live = q.LiveWarehouse(wh)
    first = live.snapshot()
    assert live.full_reads == 3 and _held_sales(first) == _current_sales(wh)
    assert live.snapshot() is first  # within max_age: no query at all
    months = q.by_month(first, q.SALES, q.ALL)
    live.expire()
    unchanged = live.snapshot()
    assert unchanged is not first and unchanged.memo is first.memo, "nothing changed: numbers are reused"
    assert q.by_month(unchanged, q.SALES, q.ALL) is months

    now = q.utc_now().replace(microsecond=0)
    ((units_of_5,),) = sql(wh, "SELECT units_sold FROM fact_sales_order_current WHERE sales_order_id = 5")
    ((units_of_6,),) = sql(wh, "SELECT units_sold FROM fact_sales_order_current WHERE sales_order_id = 6")
    with psycopg.connect(wh) as conn:
        insert_version(conn, 5, now, 7)
        # A late-arriving version, stamped before order 6's current one but captured after it: the
        # source's state now, so it becomes current.
        insert_version(conn, 6, datetime(2022, 11, 2), 8)
    second = live.snapshot(max_age_s=0)
    assert live.full_reads == 3, "new versions come from the tail, not a full read"
    assert second.memo is not first.memo
    assert _held_sales(second) == _current_sales(wh)
    assert second.facts[q.SALES].filter(pl.col("sales_order_id") == 5)["units"].to_list() == [7]
    assert second.facts[q.SALES].filter(pl.col("sales_order_id") == 6)["units"].to_list() == [8]
    assert second.versions[q.SALES] == 11187 + 2
    assert second.freshness.newest_version == now and not second.freshness.is_stale()
    assert second.freshness.last_arrival is not None
    assert q.by_month(second, q.SALES, q.ALL).get_column("units").sum() == (
        months.get_column("units").sum() - units_of_5 + 7 - units_of_6 + 8
    )

    # A version committed out of record-id order (two loads overlapping): below the highest record id,
    # so the tail cannot see it; the table's write counter (PostgreSQL flushes it within about a
    # second of the commit) makes the next refresh count the versions, and the count a full read.
    slow = psycopg.connect(wh)
    insert_version(slow, 10, now, 9)  # takes the next record id, uncommitted
    with psycopg.connect(wh) as conn:
        insert_version(conn, 11, now, 11)  # a higher one, committed first
    assert _held_sales(live.snapshot(max_age_s=0)) == _current_sales(wh)
    slow.commit()
    slow.close()
    deadline = time.monotonic() + 15
    while live.full_reads == 3 and time.monotonic() < deadline:
        third = live.snapshot(max_age_s=0)
        time.sleep(0.2)
    assert live.full_reads == 4, "the late commit below the highest record id forces a full read"
    third = live.snapshot(max_age_s=0)
    assert _held_sales(third) == _current_sales(wh)
    assert third.facts[q.SALES].filter(pl.col("sales_order_id") == 10)["units"].to_list() == [9]

    # The page on a warehouse that just changed: the banner says it is fresh.
    at = run_app(monkeypatch, wh)
    assert at.success and f"{now:%Y-%m-%d %H:%M:%S} UTC" in at.success[0].value
    assert not at.warning
    live.close()


def test_the_dashboard_session_is_read_only(dashboard_wh):
    live = q.LiveWarehouse(dashboard_wh.url)
    for statement in (
        "CREATE TABLE dashboard_was_here (a int)",
        "INSERT INTO dim_currency VALUES (99, 'XXX', 'Nothing')",
        "UPDATE fact_payment SET paid = true",
        "DELETE FROM dim_location",
    ):
        with pytest.raises(Exception, match="read-only transaction") as info:
            live.execute(statement)
        assert q.sqlstate(info.value) == "25006"
    assert sql(dashboard_wh.url, "SELECT count(*) FROM dim_currency")[0][0] == 3
    with psycopg.connect(q.read_only_conninfo(dashboard_wh.url)) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW application_name").fetchone() == ("totesys_dashboard",)
    live.close()


# --- empty, unreachable, and no passwords ------------------------------------------------------------------


def test_an_empty_warehouse_says_what_to_run(pg, monkeypatch):
    no_schema = pg.new_db("dash_empty")
    at = run_app(monkeypatch, no_schema)
    assert (
        at.warning[0].value
        == f"The warehouse at {q.display_url(no_schema)} has no star schema yet (no table fact_sales_order)."
    )
    assert "totesys-dev" in at.info[0].value and not at.error
    WarehouseResource(url=no_schema).ensure_schema()  # tables and views, no rows
    at = run_app(monkeypatch, no_schema)
    assert "has no facts yet" in at.warning[0].value
    assert "totesys-dev" in at.info[0].value and not at.error


def test_an_unreachable_warehouse_says_so_without_the_password(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://dash:s3cr3t-pw@127.0.0.1:{port}/warehouse"
    at = run_app(monkeypatch, url)
    message = at.error[0].value
    assert f"Cannot reach the warehouse at postgresql://dash:***@127.0.0.1:{port}/warehouse" in message
    assert "WAREHOUSE_DB_URL" in at.info[0].value
    assert "s3cr3t-pw" not in texts(at)


def test_the_url_is_shown_without_its_password(dashboard_wh, monkeypatch):
    # The test cluster trusts local connections, so a password in the URL is accepted and ignored.
    url = dashboard_wh.url.replace("postgres:@", "postgres:hunter2@", 1)
    assert "hunter2" in url
    at = run_app(monkeypatch, url)
    assert "postgres:***@" in texts(at) and "hunter2" not in texts(at)


# --- the console script ----------------------------------------------------------------------------------


def test_cli_defaults_and_pass_through():
    argv = cli.streamlit_argv([])
    assert argv[:3] == ["streamlit", "run", str(APP)]
    options = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert options == {
        "--server.address": "127.0.0.1",
        "--server.port": "8501",
        "--browser.gatherUsageStats": "false",
        "--client.toolbarMode": "minimal",
    }
    argv = cli.streamlit_argv(["--server.port", "8502", "--server.headless=true"])
    assert argv.count("--server.port") == 1 and argv[-3:] == [
        "--server.port",
        "8502",
        "--server.headless=true",
    ]


def test_cli_main_hands_over_to_streamlit(dashboard_wh, monkeypatch, capsys):
    monkeypatch.setenv("WAREHOUSE_DB_URL", dashboard_wh.url)
    monkeypatch.setattr(sys, "argv", ["totesys-dashboard"])
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])  # `streamlit run <app> … --help`: Streamlit's own options
    assert exited.value.code == 0
    assert "--server.port" in capsys.readouterr().out
    monkeypatch.setenv("WAREHOUSE_DB_URL", "postgresql://nobody:pw@127.0.0.1:9/none")
    cli._warm_up()  # an unreachable warehouse is left for the first page to explain


def test_the_console_script_serves_the_app(dashboard_wh, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WAREHOUSE_DB_URL": dashboard_wh.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "totesys_assets.dashboard.cli", "--server.port", str(port), "--server.headless", "true"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as resp:
                    assert resp.read() == b"ok"
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "the dashboard did not start within 60 s"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert b"<title>Streamlit</title>" in resp.read() or resp.status == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_freshness_is_judged_on_the_load_time_when_postgres_records_it():
    now = datetime(2026, 1, 1, 12, 0)
    old = datetime(2025, 1, 1)
    recorded = q.Freshness(old, {}, loaded_at=datetime(2026, 1, 1, 11, 45), commit_timestamps=True,
                           last_arrival=None, checked_at=now)  # fmt: skip
    assert not recorded.is_stale(now)  # loaded 15 minutes ago, though the newest version is old
    unknown = q.Freshness(old, {}, loaded_at=None, commit_timestamps=False, last_arrival=None, checked_at=now)
    assert unknown.is_stale(now) and unknown.age(now).days == 365
