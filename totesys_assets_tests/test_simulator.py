"""The demo source simulator against a real embedded PostgreSQL: schema, data, time, exports, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from totesys_assets.simulator import Simulator, SimulatorError, cli
from totesys_assets.simulator.reference_loader import ReferenceDataError
from totesys_assets.specs import SOURCE_TABLE_NAMES, SOURCE_TABLES
from totesys_assets_tests.conftest import reference_path

END = datetime(2024, 3, 15, 12, 0)  # a Friday noon
ORDERS = {
    "sales_order": ("SALE", 1, "units_sold", "unit_price"),
    "purchase_order": ("PURCHASE", 3, "item_quantity", "item_unit_price"),
}

DATE_CHECK = """
    SELECT count(*) FROM {t}
    WHERE agreed_delivery_date !~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$' OR agreed_payment_date !~ '^\\d{{4}}-\\d{{2}}-\\d{{2}}$'
       OR agreed_payment_date::date NOT BETWEEN created_at::date AND created_at::date + 6
       OR agreed_delivery_date::date < created_at::date"""
OUTSIDE_HOURS = """
    SELECT count(*) FROM {t} WHERE (extract(isodow FROM created_at) > 5
       OR created_at::time < '08:00' OR created_at::time >= '19:00')
      AND {pk} >= %s"""
ORDER_PAYMENT_MATCH = """
    SELECT count(*) FROM {t} o
    JOIN transaction t ON t.{pk} = o.{pk}
    JOIN payment p ON p.transaction_id = t.transaction_id
    WHERE t.transaction_type = %s AND t.created_at = o.created_at AND t.last_updated = t.created_at
      AND p.created_at = o.created_at AND p.payment_amount = o.{qty} * o.{price}
      AND p.counterparty_id = o.counterparty_id AND p.currency_id = o.currency_id
      AND p.payment_type_id = %s AND p.payment_date = o.agreed_payment_date
      AND p.company_ac_number BETWEEN 10000000 AND 99999999
      AND p.counterparty_ac_number BETWEEN 10000000 AND 99999999"""
ID_AND_TIME_CHECK = """
    SELECT count(*), max({pk}), count(*) FILTER (WHERE created_at > last_updated),
           count(*) FILTER (WHERE extract(microseconds FROM last_updated)::int % 1000 <> 0
                               OR extract(microseconds FROM created_at)::int % 1000 <> 0)
    FROM {t}"""


def q(template: str, **names: str) -> sql.Composed:
    """A query with table/column names filled in as quoted identifiers."""
    return sql.SQL(template).format(**{k: sql.Identifier(v) for k, v in names.items()})


def fetch(url: str, query: str | sql.Composable, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params or None).fetchall()


def scalar(url: str, query: str | sql.Composable, params: tuple = ()):
    return fetch(url, query, params)[0][0]


def digests(url: str) -> dict[str, str]:
    """An md5 of every table's full contents in id order: equal digests mean identical data."""
    out = {}
    for table in SOURCE_TABLE_NAMES:
        pk = SOURCE_TABLES[table].primary_key
        out[table] = scalar(
            url,
            q("SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY {pk}), '')) FROM {t} x", pk=pk, t=table),
        )
    return out


def drop_db(pg, url: str) -> None:
    """Drop a test database at once: fewer files for the server's final checkpoint to flush."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg.base_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def new_db(pg) -> Iterator[Callable[[str], str]]:
    """Like `pg.new_db`, dropping the databases after the test."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(pg.new_db(prefix))
        return made[-1]

    yield make
    for url in made:
        drop_db(pg, url)


def seeded(new_db, prefix: str, **kwargs) -> tuple[Simulator, str]:
    url = new_db(prefix)
    sim_kwargs = {k: kwargs.pop(k) for k in ("seed", "scale") if k in kwargs}
    sim = Simulator(url, **sim_kwargs)
    sim.create_schema()
    sim.seed_history(**kwargs)
    return sim, url


@pytest.fixture(scope="module")
def month(pg) -> Iterator[str]:
    """30 days of history at the real rate."""
    url = seeded(pg.new_db, "sim_month", end=END, days=30)[1]
    yield url
    drop_db(pg, url)


@pytest.fixture(scope="module")
def month_x10(pg) -> Iterator[str]:
    url = seeded(pg.new_db, "sim_x10", end=END, days=30, scale=10)[1]
    yield url
    drop_db(pg, url)


# -- schema ------------------------------------------------------------------------------------

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable, character_maximum_length,
               numeric_precision, numeric_scale, datetime_precision, udt_name, column_default
        FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "enums": """
        SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)
        FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY 1 ORDER BY 1""",
    "sequences": """
        SELECT sequencename, data_type::text, start_value, min_value, max_value, increment_by, cycle, cache_size
        FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1""",
    "owned_sequences": """
        SELECT c.relname, pg_get_serial_sequence(c.relname, a.attname)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
          AND pg_get_serial_sequence(c.relname, a.attname) IS NOT NULL ORDER BY 1""",
}


def catalog(url: str) -> dict[str, list[tuple]]:
    return {name: fetch(url, query) for name, query in CATALOG_QUERIES.items()}


def test_schema_matches_the_real_dump(new_db):
    dump = reference_path("schema", "schema.sql").read_text()
    dump = "\n".join(
        line
        for line in dump.splitlines()
        if line.strip() not in ("DROP OWNED BY totesys_test_user;", "CREATE SCHEMA public;")
    )
    real = new_db("schema_real")
    with psycopg.connect(real, autocommit=True) as conn:
        conn.execute(dump)
    ours = new_db("schema_sim")
    sim = Simulator(ours)
    sim.create_schema()
    sim.create_schema()  # idempotent

    expected, got = catalog(real), catalog(ours)
    assert (
        len(expected["columns"]) == 94
        and len(expected["constraints"]) == 29
        and len(expected["indexes"]) == 15
    )
    for name in CATALOG_QUERIES:
        assert got[name] == expected[name], name


# -- generated history --------------------------------------------------------------------------


def test_static_tables_are_the_real_ones(month):
    counts = {t: scalar(month, q("SELECT count(*) FROM {t}", t=t)) for t in SOURCE_TABLE_NAMES}
    assert {
        t: counts[t] for t in ("address", "counterparty", "currency", "department", "staff", "payment_type")
    } == {
        "address": 30,
        "counterparty": 20,
        "currency": 3,
        "department": 8,
        "staff": 20,
        "payment_type": 4,
    }
    assert fetch(month, "SELECT first_name, last_name, email_address FROM staff WHERE staff_id = 17") == [
        ("Irving", "O'Keefe", "irving.o'keefe@terrifictotes.com")
    ]
    assert fetch(month, "SELECT currency_id, currency_code FROM currency ORDER BY 1") == [
        (1, "GBP"),
        (2, "USD"),
        (3, "EUR"),
    ]
    assert scalar(month, "SELECT location FROM department WHERE department_id = 4") == "Leds"
    assert fetch(
        month,
        "SELECT count(*) FILTER (WHERE address_line_2 IS NULL), count(*) FILTER (WHERE district IS NULL) "
        "FROM address",
    ) == [(20, 14)]
    assert {"02813", "99305-7380"} <= {r[0] for r in fetch(month, "SELECT postal_code FROM address")}
    assert fetch(month, "SELECT payment_type_name::text FROM payment_type ORDER BY payment_type_id") == [
        ("SALES_RECEIPT",),
        ("SALES_REFUND",),
        ("PURCHASE_PAYMENT",),
        ("PURCHASE_REFUND",),
    ]
    assert (
        scalar(
            month, "SELECT count(*) FROM counterparty c JOIN address a ON a.address_id = c.legal_address_id"
        )
        == 20
    )
    start = END - timedelta(days=30)
    assert scalar(month, "SELECT min(created_at) FROM address") == start


def test_volumes_and_ranges_are_realistic(month):
    weekdays = sum((END - timedelta(days=d)).weekday() < 5 for d in range(30))
    sales = scalar(month, "SELECT count(*) FROM sales_order")
    purchases = scalar(month, "SELECT count(*) FROM purchase_order")
    assert 15 * weekdays < sales < 28 * weekdays
    assert 5 * weekdays < purchases < 13 * weekdays
    ((lo_u, hi_u, lo_p, hi_p),) = fetch(
        month, "SELECT min(units_sold), max(units_sold), min(unit_price), max(unit_price) FROM sales_order"
    )
    assert 1001 <= lo_u <= hi_u <= 99973 and Decimal("2.00") <= lo_p <= hi_p <= Decimal("4.00")
    ((lo_q, hi_q, lo_ip, hi_ip),) = fetch(
        month,
        "SELECT min(item_quantity), max(item_quantity), min(item_unit_price), max(item_unit_price) FROM purchase_order",
    )
    assert 1 <= lo_q <= hi_q <= 999 and Decimal("3.32") <= lo_ip <= hi_ip <= Decimal("999.07")
    for table in ORDERS:
        bad_dates = scalar(month, q(DATE_CHECK, t=table))
        assert bad_dates == 0, table
    assert scalar(month, "SELECT count(*) FROM purchase_order WHERE item_code !~ '^[A-Z0-9]{7}$'") == 0
    assert (
        scalar(month, "SELECT count(*) FROM design WHERE file_name !~ '^[a-z]+-\\d{8}-[a-z0-9]{4}\\.json$'")
        == 0
    )


def test_orders_arrive_mon_to_fri_in_business_hours(month):
    # The ten initial designs were part of the seed (at its start time), not the daily activity.
    for table, first_id in (("sales_order", 1), ("purchase_order", 1), ("design", 11)):
        outside = scalar(month, q(OUTSIDE_HOURS, t=table, pk=SOURCE_TABLES[table].primary_key), (first_id,))
        assert outside == 0, table


def test_every_order_has_one_transaction_and_one_matching_payment(month_x10):
    url = month_x10
    for table, (kind, payment_type, qty, price) in ORDERS.items():
        pk = SOURCE_TABLES[table].primary_key
        n = scalar(url, q("SELECT count(*) FROM {t}", t=table))
        rows = scalar(url, q(ORDER_PAYMENT_MATCH, t=table, pk=pk, qty=qty, price=price), (kind, payment_type))
        assert rows == n > 0, table
    assert scalar(url, "SELECT count(*) FROM transaction") == scalar(url, "SELECT count(*) FROM payment")
    assert (
        scalar(
            url,
            "SELECT count(*) FROM transaction WHERE (sales_order_id IS NULL) = (purchase_order_id IS NULL)",
        )
        == 0
    )


def test_payments_flip_to_paid_at_the_0755_run_on_their_date(month_x10):
    url = month_x10
    assert scalar(url, "SELECT count(*) FROM payment WHERE paid") > 100
    assert (
        scalar(
            url,
            """
        SELECT count(*) FROM payment WHERE paid AND (last_updated::date <> payment_date::date
           OR last_updated::time NOT BETWEEN '07:55:11' AND '07:55:12' OR last_updated <= created_at)""",
        )
        == 0
    )
    assert scalar(url, "SELECT count(*) FROM payment WHERE NOT paid AND last_updated <> created_at") == 0
    # Every weekday payment run before the end has paid everything due that was created before it.
    missed = scalar(
        url,
        """
        SELECT count(*) FROM payment WHERE NOT paid AND payment_date::date < %s::date
           AND extract(isodow FROM payment_date::date) < 6 AND payment_date::date > created_at::date""",
        (END,),
    )
    assert missed == 0
    # One run time per day, shared by every payment it flipped.
    assert (
        scalar(
            url,
            "SELECT max(n) FROM (SELECT count(DISTINCT last_updated) n FROM payment WHERE paid "
            "GROUP BY payment_date) d",
        )
        == 1
    )


def test_timestamps_ids_and_changes(month_x10):
    url = month_x10
    for table in SOURCE_TABLE_NAMES:
        pk = SOURCE_TABLES[table].primary_key
        row = fetch(url, q(ID_AND_TIME_CHECK, t=table, pk=pk))[0]
        assert row[0] == row[1] and row[2:] == (0, 0), table
    # ~1% of orders changed in place after creation, with last_updated bumped into business hours.
    changed = fetch(
        url,
        """
        SELECT count(*), count(*) FILTER (WHERE extract(isodow FROM last_updated) > 5
                                            OR last_updated::time NOT BETWEEN '08:00' AND '19:00')
        FROM sales_order WHERE last_updated > created_at""",
    )[0]
    assert changed[0] > 10 and changed[1] == 0
    assert scalar(url, "SELECT count(*) FROM purchase_order WHERE last_updated > created_at") > 0


def test_sequences_continue_after_the_seed(month_x10):
    for table in SOURCE_TABLE_NAMES:
        pk = SOURCE_TABLES[table].primary_key
        with psycopg.connect(month_x10) as conn:
            last = conn.execute(q("SELECT max({pk}) FROM {t}", pk=pk, t=table)).fetchone()[0]
            assert (
                conn.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))", (table, pk)).fetchone()[0]
                == last + 1
            )
            conn.rollback()


def test_same_seed_same_data_other_seed_other_data_scale_multiplies(new_db, month, month_x10):
    _, again = seeded(new_db, "sim_again", end=END, days=30)
    assert digests(again) == digests(month)
    _, other = seeded(new_db, "sim_other", end=END, days=30, seed=7)
    other_digests, month_digests = digests(other), digests(month)
    assert other_digests["address"] == month_digests["address"]
    assert other_digests["sales_order"] != month_digests["sales_order"]
    ratio = scalar(month_x10, "SELECT count(*) FROM sales_order") / scalar(
        month, "SELECT count(*) FROM sales_order"
    )
    assert 7 < ratio < 13


def test_seed_refuses_a_source_with_rows(month):
    with pytest.raises(SimulatorError, match="already has rows"):
        Simulator(month).seed_history(end=END, days=1)


# -- advancing time ------------------------------------------------------------------------------


def _changed_since(url: str, since: datetime) -> dict[str, int]:
    return {
        t: scalar(url, q("SELECT count(*) FROM {t} WHERE last_updated > %s", t=t), (since,))
        for t in SOURCE_TABLE_NAMES
    }


def test_advance_adds_orders_flips_payments_and_counts_right(new_db):
    sim, url = seeded(new_db, "sim_adv", end=END, days=10, scale=3)
    assert sim.now() == END
    # Friday noon -> Monday 10:00: a weekend, one payment run (Monday 07:55) and Monday morning trade.
    target = END + timedelta(days=2, hours=22)
    counts = sim.advance(to=target)
    assert sim.now() == target
    assert counts == _changed_since(url, END)
    assert (
        counts["sales_order"] > 0 and counts["transaction"] > 0 and counts["payment"] > counts["transaction"]
    )
    # Friday afternoon and Monday morning trade, nothing at the weekend.
    days = fetch(
        url, "SELECT DISTINCT created_at::date FROM sales_order WHERE created_at > %s ORDER BY 1", (END,)
    )
    assert days == [(date(2024, 3, 15),), (date(2024, 3, 18),)]
    assert scalar(url, "SELECT max(created_at) FROM sales_order") <= target
    run = fetch(url, "SELECT DISTINCT last_updated FROM payment WHERE paid AND payment_date = '2024-03-18'")
    assert len(run) == 1 and run[0][0].date() == date(2024, 3, 18) and END < run[0][0] < target
    assert (
        scalar(
            url,
            "SELECT count(*) FROM payment WHERE NOT paid AND payment_date = '2024-03-18' AND created_at < %s",
            (run[0][0],),
        )
        == 0
    )
    # The ids continue without gaps.
    assert scalar(url, "SELECT max(transaction_id) = count(*) FROM transaction")


def test_advance_in_five_minute_steps_and_quiet_nights(new_db):
    sim, url = seeded(new_db, "sim_steps", end=END, days=3, scale=20)
    totals = dict.fromkeys(SOURCE_TABLE_NAMES, 0)
    for _ in range(4):
        for table, n in sim.advance(timedelta(minutes=5)).items():
            totals[table] += n
    assert sim.now() == END + timedelta(minutes=20)
    assert totals == _changed_since(url, END) and totals["sales_order"] > 0
    # Saturday 03:00 is quiet, yet the clock moves on.
    sim.advance(to=datetime(2024, 3, 16, 3, 0))
    assert sim.advance(timedelta(minutes=5)) == dict.fromkeys(SOURCE_TABLE_NAMES, 0)
    assert sim.now() == datetime(2024, 3, 16, 3, 5)
    assert sim.advance(to=datetime(2024, 3, 16)) == dict.fromkeys(SOURCE_TABLE_NAMES, 0)  # the past: nothing


def test_advance_is_deterministic_and_matches_a_seed_to_the_same_end(new_db):
    steps = [timedelta(minutes=5), timedelta(hours=2), timedelta(days=1, minutes=7), timedelta(days=3)]
    urls = []
    for i in range(2):
        sim, url = seeded(new_db, f"sim_det{i}", end=END, days=7, scale=4)
        for step in steps:
            sim.advance(step)
        urls.append(url)
    assert digests(urls[0]) == digests(urls[1])
    # The steps changed rows stored before them: payments paid and orders changed in place.
    for table in ("payment", "sales_order"):
        assert (
            scalar(
                urls[0],
                q("SELECT count(*) FROM {t} WHERE created_at <= %s AND last_updated > %s", t=table),
                (END, END),
            )
            > 0
        ), table
    # Seeding straight to the same end gives the very same rows: advancing continues the history.
    end = END + sum(steps, timedelta())
    _, direct = seeded(new_db, "sim_direct", start=END - timedelta(days=7), end=end, scale=4)
    assert digests(direct) == digests(urls[0])


def test_advance_needs_a_source(new_db):
    url = new_db("sim_empty")
    Simulator(url).create_schema()
    with pytest.raises(SimulatorError, match="seed_history"):
        Simulator(url).advance(timedelta(minutes=5))


def test_insert_sales_order(new_db):
    sim, url = seeded(new_db, "sim_insert", end=END, days=2)
    before = scalar(url, "SELECT max(sales_order_id) FROM sales_order")
    at = END + timedelta(minutes=1)
    order_id = sim.insert_sales_order(at, units_sold=1234, unit_price=Decimal("3.21"))
    assert order_id == before + 1
    row = fetch(
        url,
        """
        SELECT o.created_at, o.last_updated, o.units_sold, o.unit_price, t.transaction_type::text, p.payment_amount,
               p.paid, p.payment_date = o.agreed_payment_date, p.counterparty_id = o.counterparty_id, p.created_at
        FROM sales_order o JOIN transaction t USING (sales_order_id) JOIN payment p USING (transaction_id)
        WHERE o.sales_order_id = %s""",
        (order_id,),
    )
    assert row == [(at, at, 1234, Decimal("3.21"), "SALE", Decimal("3961.14"), False, True, True, at)]
    assert sim.now() == END  # the clock stays put
    with pytest.raises(KeyError):
        sim.insert_sales_order(at, no_such_column=1)


# -- real exports ---------------------------------------------------------------------------------

SNAPSHOTS = {
    "oltp_2024-11-15_parquet": {
        "design": 473,
        "payment": 15836,
        "purchase_order": 4649,
        "sales_order": 11187,
        "transaction": 15836,
    },
    "oltp_2023-11-06_json": {
        "design": 249,
        "payment": 7346,
        "purchase_order": 2247,
        "sales_order": 5099,
        "transaction": 7346,
    },
    "oltp_2025-02-25_json": {
        "design": 535,
        "payment": 0,
        "purchase_order": 5300,
        "sales_order": 12836,
        "transaction": 18136,
    },
}
STATIC_COUNTS = {
    "address": 30,
    "counterparty": 20,
    "currency": 3,
    "department": 8,
    "payment_type": 4,
    "staff": 20,
}


@pytest.mark.reference
@pytest.mark.parametrize("snapshot", list(SNAPSHOTS))
def test_load_reference_snapshot(new_db, snapshot):
    folder = reference_path(snapshot)
    url = new_db("sim_ref")
    sim = Simulator(url)
    sim.create_schema()
    loaded = sim.load_reference(folder)
    expected = STATIC_COUNTS | SNAPSHOTS[snapshot]
    assert {t: scalar(url, q("SELECT count(*) FROM {t}", t=t)) for t in SOURCE_TABLE_NAMES} == expected
    assert sum(loaded.values()) == sum(expected.values())
    assert fetch(url, "SELECT last_name, email_address FROM staff WHERE staff_id = 17") == [
        ("O'Keefe", "irving.o'keefe@terrifictotes.com")
    ]
    assert scalar(url, "SELECT staff_id FROM sales_order WHERE sales_order_id = 2") == 19
    assert scalar(url, "SELECT purchase_order_id FROM transaction WHERE transaction_id = 1") == 2
    assert scalar(url, "SELECT unit_price FROM sales_order WHERE sales_order_id = 2") == Decimal("3.94")
    assert scalar(url, "SELECT created_at FROM counterparty WHERE counterparty_id = 1") == datetime(
        2022, 11, 3, 14, 20, 51, 563000
    )
    if SNAPSHOTS[snapshot]["payment"]:
        assert fetch(url, "SELECT payment_amount, paid FROM payment WHERE payment_id = 2") == [
            (Decimal("552548.62"), False)
        ]
        assert fetch(url, "SELECT last_updated, paid FROM payment WHERE payment_id = 1") == [
            (datetime(2022, 11, 7, 7, 55, 11, 885000), True)
        ]
    # Sequences continue after the export's ids.
    with psycopg.connect(url) as conn:
        assert (
            conn.execute("SELECT nextval('sales_order_sales_order_id_seq')").fetchone()[0]
            == expected["sales_order"] + 1
        )
        conn.rollback()
    with pytest.raises(SimulatorError, match="already has rows"):
        sim.load_reference(folder)
    if snapshot == "oltp_2024-11-15_parquet":
        _advance_the_real_snapshot(sim, url)


def _advance_the_real_snapshot(sim: Simulator, url: str) -> None:
    """The simulated business carries on from the real data: ids continue, real payments get paid."""
    newest = datetime(2024, 11, 15, 14, 40, 10, 188000)
    assert sim.now() == newest
    counts = sim.advance(to=datetime(2024, 11, 19, 12))
    assert counts == _changed_since(url, newest)
    assert (
        scalar(url, "SELECT min(sales_order_id) FROM sales_order WHERE created_at > %s", (newest,)) == 11188
    )
    assert scalar(
        url,
        "SELECT bool_and(paid) FROM payment WHERE payment_date = '2024-11-18' AND created_at < '2024-11-18'",
    )


def test_a_bad_export_names_file_column_and_value(new_db, tmp_path):
    (tmp_path / "currency.json").write_text(
        '[{"currency_id": 1, "currency_code": "GBP", "created_at": "2022-11-03T14:20:49.962", '
        '"last_updated": "yesterday"}]'
    )
    url = new_db("sim_bad_ref")
    with pytest.raises(ReferenceDataError, match=r"currency.json: column 'last_updated' .*'yesterday'"):
        Simulator(url).load_reference(tmp_path)
    (tmp_path / "currency.json").write_text(
        '{"currency": [{"currency_id": 1, "currency_code": "GBP", "created_at": "2022-11-03T14:20:49", '
        '"last_updated": "2022-11-03 14:20:49.5"}], "other": []}'
    )
    assert Simulator(url).load_reference(tmp_path) == {"currency": 1}
    assert fetch(url, "SELECT created_at, last_updated FROM currency") == [
        (datetime(2022, 11, 3, 14, 20, 49), datetime(2022, 11, 3, 14, 20, 49, 500000))
    ]


# -- command line ---------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("totesys-sim")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "totesys_assets.simulator.cli"]
    env = {k: v for k, v in os.environ.items() if k != "TOTESYS_DB_URL"}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def test_cli_init_advance_and_stats(new_db, capsys):
    url = new_db("sim_cli")
    init = _cli("--url", url, "init", "--days", "5", "--seed", "3")
    assert init.returncode == 0, init.stderr
    assert "sales_order" in init.stdout
    assert scalar(url, "SELECT count(*) FROM staff") == 20
    assert scalar(url, "SELECT seed FROM _simulator_clock") == 3

    # In-process for speed: advance continues with the stored seed, and errors are one clear line.
    before = scalar(url, "SELECT simulated_now FROM _simulator_clock")
    cli.main(["--url", url, "advance", "--minutes", "30"])
    assert "advanced" in capsys.readouterr().out
    assert scalar(url, "SELECT simulated_now FROM _simulator_clock") == before + timedelta(minutes=30)
    with pytest.raises(SystemExit, match="already has rows"):
        cli.main(["--url", url, "init", "--days", "5"])

    stats = _cli("--url", url, "stats")
    assert stats.returncode == 0, stats.stderr
    lines = {line.split()[0]: line.split()[1:] for line in stats.stdout.splitlines()[2:]}
    assert set(lines) == set(SOURCE_TABLE_NAMES)
    assert lines["staff"][0] == "20"
    assert int(lines["sales_order"][0].replace(",", "")) == scalar(url, "SELECT count(*) FROM sales_order")
