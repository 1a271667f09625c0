"""The warehouse resource against a real (embedded) PostgreSQL: DDL, upserts, fact versions, errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from decimal import Decimal
from urllib.parse import urlsplit

import dagster as dg
import polars as pl
import psycopg
import pytest
from polars.testing import assert_frame_equal
from psycopg import sql

from totesys_assets.resources.warehouse import (
    CURRENT_VIEWS,
    DELETIONS_TABLE,
    LoadResult,
    WarehouseConnectionError,
    WarehouseLoadError,
    WarehouseResource,
    WarehouseSchemaError,
    prepare_frame,
)
from totesys_assets.specs import DIMENSION_NAMES, FACT_NAMES, WAREHOUSE_TABLES, Kind
from totesys_assets.star.checks import (
    Scope,
    evaluate_foreign_keys,
    evaluate_not_null,
    evaluate_primary_key,
    primary_key_query,
)

DAY = dt.date(2024, 11, 15)


@pytest.fixture
def wh(pg) -> WarehouseResource:
    resource = WarehouseResource(url=pg.new_db("wh"))
    resource.ensure_schema()
    return resource


def frame(table: str, rows: list[dict]) -> pl.DataFrame:
    """Rows typed by the table's spec (only the columns a load supplies); a fact row that does not
    say which captured version it is gets version hash "0", captured at the epoch."""
    spec = WAREHOUSE_TABLES[table]
    schema = {c: spec.column(c).dtype for c in spec.insert_columns}
    if spec.is_fact:
        capture = {"version_hash": "0", "captured_at": dt.datetime(1970, 1, 1)}
        rows = [{**capture, **r} if isinstance(r, dict) else r for r in rows]
    return pl.DataFrame(rows, schema=schema, orient="row")


def seed_dimensions(wh: WarehouseResource) -> None:
    """The dimension rows the fact tests refer to (ids 1..3, a month of dates around DAY)."""
    dates = pl.date_range(DAY - dt.timedelta(days=15), DAY + dt.timedelta(days=15), eager=True)
    wh.upsert_dimension(
        "dim_date",
        pl.DataFrame({"date_id": dates}).with_columns(
            year=pl.col("date_id").dt.year().cast(pl.Int32),
            month=pl.col("date_id").dt.month().cast(pl.Int32),
            day=pl.col("date_id").dt.day().cast(pl.Int32),
            day_of_week=pl.col("date_id").dt.weekday().cast(pl.Int32),
            day_name=pl.col("date_id").dt.strftime("%A"),
            month_name=pl.col("date_id").dt.strftime("%B"),
            quarter=pl.col("date_id").dt.quarter().cast(pl.Int32),
        ),
    )
    ids = [1, 2, 3]
    wh.upsert_dimension(
        "dim_staff",
        frame(
            "dim_staff",
            [
                dict(
                    staff_id=i,
                    first_name="Jeremie",
                    last_name="Franey",
                    department_name="Purchasing",
                    location="Manchester",
                    email_address=f"s{i}@terrifictotes.com",
                )
                for i in ids
            ],
        ),
    )
    wh.upsert_dimension("dim_location", frame("dim_location", [location_row(i) for i in ids]))
    wh.upsert_dimension(
        "dim_design",
        frame(
            "dim_design",
            [
                dict(design_id=i, design_name="Wooden", file_location="/usr", file_name=f"w{i}.json")
                for i in ids
            ],
        ),
    )
    wh.upsert_dimension(
        "dim_currency",
        frame(
            "dim_currency",
            [
                dict(currency_id=1, currency_code="GBP", currency_name="Pound Sterling"),
                dict(currency_id=2, currency_code="USD", currency_name="US Dollar"),
                dict(currency_id=3, currency_code="EUR", currency_name="Euro"),
            ],
        ),
    )
    wh.upsert_dimension(
        "dim_counterparty",
        frame(
            "dim_counterparty",
            [
                dict(
                    counterparty_id=i,
                    counterparty_legal_name="Fahey and Sons",
                    counterparty_legal_address_line_1="605 Haskell Trafficway",
                    counterparty_legal_address_line_2=None,
                    counterparty_legal_district=None,
                    counterparty_legal_city="Aliso Viejo",
                    counterparty_legal_postal_code="99305-7380",
                    counterparty_legal_country="San Marino",
                    counterparty_legal_phone_number="9687 937447",
                )
                for i in ids
            ],
        ),
    )
    wh.upsert_dimension(
        "dim_payment_type",
        frame(
            "dim_payment_type",
            [
                dict(payment_type_id=i, payment_type_name=n)
                for i, n in enumerate(
                    ["SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND"], 1
                )
            ],
        ),
    )
    wh.upsert_dimension(
        "dim_transaction",
        frame(
            "dim_transaction",
            [
                dict(transaction_id=i, transaction_type="SALE", sales_order_id=i, purchase_order_id=None)
                for i in ids
            ],
        ),
    )


def location_row(i: int, **changes) -> dict:
    row = dict(
        location_id=i,
        address_line_1=f"{i} Zieme Mountains",
        address_line_2=None,
        district="Avon",
        city="New Patienceburgh",
        postal_code="28441",
        country="Turkey",
        phone="1803 637401",
    )
    return {**row, **changes}


def sales_row(order_id: int, updated: dt.datetime, **changes) -> dict:
    created = dt.datetime(2024, 11, 14, 9, 0, 0, 123000)
    row = dict(
        sales_order_id=order_id,
        created_date=created.date(),
        created_time=created.time(),
        last_updated_date=updated.date(),
        last_updated_time=updated.time(),
        sales_staff_id=1,
        counterparty_id=2,
        units_sold=1000 + order_id,
        unit_price=Decimal("2.50"),
        currency_id=1,
        design_id=3,
        agreed_payment_date=DAY,
        agreed_delivery_date=DAY + dt.timedelta(days=3),
        agreed_delivery_location_id=2,
    )
    return {**row, **changes}


def fetch(wh: WarehouseResource, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(wh.url) as conn:  # type: ignore[arg-type]
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------------
# DDL
# -------------------------------------------------------------------------------------------------


def test_ddl_creates_the_11_tables_exactly_as_the_specs(wh):
    columns = fetch(
        wh,
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
    )
    live: dict[str, list[tuple]] = {}
    for table, name, pg_type, not_null, default in columns:
        live.setdefault(table, []).append((name, pg_type, not_null, default is not None))
    # the 11 tables, and the deletions observed at the source
    assert sorted(live) == sorted([*WAREHOUSE_TABLES, DELETIONS_TABLE])
    for spec in WAREHOUSE_TABLES.values():
        expected = [
            (c.name, "integer" if c.kind is Kind.SERIAL else c.pg_type, not c.nullable, c.kind is Kind.SERIAL)
            for c in spec.columns
        ]
        assert live[spec.name] == expected, spec.name

    constraints = fetch(
        wh,
        "SELECT conrelid::regclass::text, contype, "
        "array(SELECT attname FROM unnest(conkey) k JOIN pg_attribute ON attrelid = conrelid AND attnum = k "
        "ORDER BY array_position(conkey, k)), confrelid::regclass::text, "
        "array(SELECT attname FROM unnest(confkey) k JOIN pg_attribute ON attrelid = confrelid AND attnum = k), "
        "convalidated FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype IN ('p','u','f')",
    )
    got = {
        (t, kind, tuple(cols), ref if ref != "-" else None, tuple(refcols or ()))
        for t, kind, cols, ref, refcols, _ in constraints
    }
    want = {(DELETIONS_TABLE, "p", ("fact", "source_id", "observed_at"), None, ())}
    for spec in WAREHOUSE_TABLES.values():
        want.add((spec.name, "p", (spec.primary_key,), None, ()))
        if spec.natural_key:
            want.add((spec.name, "u", spec.natural_key, None, ()))
        for col in spec.foreign_keys:
            ref_table, ref_col = col.references.split(".")  # type: ignore[union-attr]
            want.add((spec.name, "f", (col.name,), ref_table, (ref_col,)))
    assert got == want
    assert all(validated for *_, validated in constraints)
    # every *_date column of a fact references dim_date
    for name in FACT_NAMES:
        for col in WAREHOUSE_TABLES[name].columns:
            if col.kind is Kind.DATE:
                assert col.references == "dim_date.date_id"
                assert (name, "f", (col.name,), "dim_date", ("date_id",)) in got

    views = dict(fetch(wh, "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public'"))
    assert sorted(views) == sorted(CURRENT_VIEWS) == sorted(f"{n}_current" for n in FACT_NAMES)


def catalog_snapshot(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT 'col', c.relname, a.attname, format_type(a.atttypid, a.atttypmod)::text, a.attnotnull::text "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped "
            "UNION ALL SELECT 'con', conname, conrelid::regclass::text, pg_get_constraintdef(oid), oid::text "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'rel', relname, relkind::text, oid::text, relfilenode::text FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'view', viewname, definition, '', '' FROM pg_views WHERE schemaname = 'public' "
            "ORDER BY 1, 2, 3"
        ).fetchall()


def test_ddl_runs_twice_without_changing_anything(wh):
    seed_dimensions(wh)
    wh.append_facts(
        "fact_sales_order", frame("fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 15, 10))])
    )
    before = catalog_snapshot(wh.url)
    data_before = wh.read_table("fact_sales_order")
    wh.ensure_schema(force=True)
    wh.ensure_schema(force=True)
    assert catalog_snapshot(wh.url) == before  # same objects, same oids, same storage: nothing recreated
    assert_frame_equal(wh.read_table("fact_sales_order"), data_before)


def test_the_b_tree_version_time_index_of_earlier_warehouses_becomes_brin(wh):
    """Facts are stored in version-time order, so the index on the version's day is BRIN (one scan
    to build); a warehouse made before that gets it converted by `ensure_schema`, rows untouched."""
    seed_dimensions(wh)
    wh.append_facts(
        "fact_sales_order", frame("fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 15, 10))])
    )
    data_before = wh.read_table("fact_sales_order")
    index = "fact_sales_order_last_updated_date_idx"
    query = "SELECT indexdef FROM pg_indexes WHERE indexname = %s"
    assert "USING brin (last_updated_date)" in fetch(wh, query, (index,))[0][0]
    with psycopg.connect(wh.url, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
        conn.execute(
            sql.SQL("CREATE INDEX {} ON fact_sales_order (last_updated_date, last_updated_time)").format(
                sql.Identifier(index)
            )
        )
    assert "USING btree" in fetch(wh, query, (index,))[0][0]
    wh.ensure_schema(force=True)
    assert "USING brin (last_updated_date)" in fetch(wh, query, (index,))[0][0]
    assert_frame_equal(wh.read_table("fact_sales_order"), data_before)


def test_ensure_schema_runs_once_per_process(wh):
    with psycopg.connect(wh.url, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute("DROP VIEW fact_payment_current")
    wh.ensure_schema()  # cached: no DDL round trip
    assert "fact_payment_current" not in {r[0] for r in fetch(wh, "SELECT viewname FROM pg_views")}
    wh.ensure_schema(force=True)
    assert "fact_payment_current" in {r[0] for r in fetch(wh, "SELECT viewname FROM pg_views")}


def test_ensure_schema_concurrently_from_several_processes(pg):
    """Real processes race on a fresh database; the advisory lock makes every one succeed."""
    url = pg.new_db("race")
    code = (
        "import sys; from totesys_assets.resources.warehouse import WarehouseResource; "
        "WarehouseResource(url=sys.argv[1]).ensure_schema()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    assert WarehouseResource(url=url).row_counts() == dict.fromkeys(WAREHOUSE_TABLES, 0)


def test_ensure_schema_refuses_a_table_that_differs_from_the_spec(pg):
    url = pg.new_db("drift")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE dim_design (design_id bigint PRIMARY KEY, design_name text NOT NULL, "
            "file_location text NOT NULL, file_name text NOT NULL)"
        )
    with pytest.raises(
        WarehouseSchemaError, match=r"dim_design\.design_id is bigint NOT NULL, the spec says integer"
    ):
        WarehouseResource(url=url).ensure_schema()


# -------------------------------------------------------------------------------------------------
# Dimensions
# -------------------------------------------------------------------------------------------------


def test_upsert_dimension_inserts_then_updates_only_changed_rows(wh):
    rows = [location_row(i) for i in (1, 2, 3)]
    first = wh.upsert_dimension("dim_location", frame("dim_location", rows))
    assert (first.inserted, first.updated, first.unchanged, first.table_rows) == (3, 0, 0, 3)

    again = wh.upsert_dimension("dim_location", frame("dim_location", rows))
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)

    xmin_before = dict(fetch(wh, "SELECT location_id, xmin::text FROM dim_location"))
    changed = [
        location_row(1),
        location_row(2, district=None, phone="0000"),
        location_row(3),
        location_row(4),
    ]
    result = wh.upsert_dimension("dim_location", frame("dim_location", changed))
    assert (result.rows, result.inserted, result.updated, result.unchanged, result.table_rows) == (
        4,
        1,
        1,
        2,
        4,
    )
    xmin_after = dict(fetch(wh, "SELECT location_id, xmin::text FROM dim_location"))
    assert xmin_after[1] == xmin_before[1] and xmin_after[3] == xmin_before[3]  # not rewritten
    assert xmin_after[2] != xmin_before[2]
    assert_frame_equal(wh.read_table("dim_location"), frame("dim_location", changed))

    # rows missing from a later frame stay (dimensions are current state; the source never deletes)
    partial = wh.upsert_dimension("dim_location", frame("dim_location", [location_row(1)]))
    assert (partial.unchanged, partial.table_rows) == (1, 4)


def test_upsert_dimension_metadata_and_empty_frame(wh):
    result = wh.upsert_dimension("dim_currency", frame("dim_currency", []))
    assert (result.inserted, result.updated, result.unchanged, result.table_rows) == (0, 0, 0, 0)
    result = wh.upsert_dimension(
        "dim_currency",
        frame("dim_currency", [dict(currency_id=1, currency_code="GBP", currency_name="Pound Sterling")]),
    )
    meta = result.metadata()
    assert meta["dagster/row_count"] == 1
    assert (meta["rows_inserted"], meta["rows_updated"], meta["rows_unchanged"]) == (1, 0, 0)
    assert "versions_skipped" not in meta


def test_load_metadata_in_a_real_dagster_run(wh):
    @dg.asset
    def dim_currency(warehouse: WarehouseResource) -> dg.MaterializeResult:
        loaded = warehouse.upsert_dimension(
            "dim_currency",
            frame("dim_currency", [dict(currency_id=2, currency_code="USD", currency_name="US Dollar")]),
        )
        return dg.MaterializeResult(metadata=loaded.metadata())

    result = dg.materialize([dim_currency], resources={"warehouse": wh})
    assert result.success
    meta = result.asset_materializations_for_node("dim_currency")[0].metadata
    assert meta["dagster/row_count"].value == 1
    assert meta["rows_inserted"].value == 1


def test_dimension_and_fact_methods_refuse_the_other_kind(wh):
    with pytest.raises(ValueError, match="fact_payment.*append_facts"):
        wh.upsert_dimension("fact_payment", pl.DataFrame())
    with pytest.raises(ValueError, match="dim_staff.*upsert_dimension"):
        wh.append_facts("dim_staff", pl.DataFrame())
    with pytest.raises(KeyError, match="dim_nothing"):
        wh.upsert_dimension("dim_nothing", pl.DataFrame())


# -------------------------------------------------------------------------------------------------
# Facts
# -------------------------------------------------------------------------------------------------


def test_facts_append_new_versions_and_keep_record_ids(wh):
    seed_dimensions(wh)
    t1, t2, t3 = (dt.datetime(2024, 11, 15, h, 0, 0, 500000) for h in (9, 10, 11))
    # deliberately out of order in the frame: record ids follow last_updated, then the order id
    first = frame("fact_sales_order", [sales_row(2, t2), sales_row(1, t1), sales_row(3, t1)])
    loaded = wh.append_facts("fact_sales_order", first)
    assert (loaded.inserted, loaded.skipped, loaded.table_rows) == (3, 0, 3)
    ids = fetch(wh, "SELECT sales_order_id, sales_record_id FROM fact_sales_order ORDER BY sales_record_id")
    assert [order for order, _ in ids] == [1, 3, 2]
    record_ids = dict(ids)

    again = wh.append_facts("fact_sales_order", first)
    assert (again.inserted, again.skipped, again.table_rows) == (0, 3, 3)
    meta = again.metadata()
    assert (meta["rows_inserted"], meta["versions_skipped"], meta["dagster/row_count"]) == (0, 3, 3)

    # order 1 changes (new last_updated): one new row; the already loaded versions keep their ids
    newer = frame("fact_sales_order", [sales_row(1, t1), sales_row(1, t3, units_sold=7), sales_row(2, t2)])
    loaded = wh.append_facts("fact_sales_order", newer)
    assert (loaded.inserted, loaded.skipped, loaded.table_rows) == (1, 2, 4)
    rows = fetch(
        wh, "SELECT sales_order_id, last_updated_time, sales_record_id, units_sold FROM fact_sales_order"
    )
    for order, updated, record_id, _ in rows:
        if (order, updated) != (1, t3.time()):
            assert record_ids[order] == record_id
    (new_id,) = [rid for order, updated, rid, _ in rows if (order, updated) == (1, t3.time())]
    assert new_id > max(record_ids.values())


def test_current_views_return_the_newest_version(wh):
    seed_dimensions(wh)
    early, late = dt.datetime(2024, 11, 15, 9, 0, 0, 1000), dt.datetime(2024, 11, 15, 9, 0, 0, 2000)
    wh.append_facts(
        "fact_sales_order",
        frame(
            "fact_sales_order",
            [
                sales_row(1, late, units_sold=2),
                sales_row(1, early, units_sold=1),
                sales_row(2, early, units_sold=5),
            ],
        ),
    )
    # a version from the previous day arriving late does not become current
    wh.append_facts(
        "fact_sales_order",
        frame(
            "fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 14, 23, 59, 59, 999000), units_sold=0)]
        ),
    )
    current = wh.read_table("fact_sales_order_current")
    assert current.select("sales_order_id", "units_sold", "last_updated_time").rows() == [
        (1, 2, late.time()),
        (2, 5, early.time()),
    ]
    assert current.schema == WAREHOUSE_TABLES["fact_sales_order"].polars_schema

    payments = frame(
        "fact_payment",
        [
            dict(
                payment_id=9,
                created_date=DAY,
                created_time=dt.time(8),
                last_updated_date=d,
                last_updated_time=t,
                transaction_id=1,
                counterparty_id=1,
                payment_amount=Decimal("10.00"),
                currency_id=1,
                payment_type_id=1,
                paid=paid,
                payment_date=DAY,
            )
            for d, t, paid in [(DAY, dt.time(8), False), (DAY + dt.timedelta(days=1), dt.time(7, 55), True)]
        ],
    )
    wh.append_facts("fact_payment", payments)
    assert wh.read_table("fact_payment_current")["paid"].to_list() == [True]
    assert (
        wh.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("fact_purchase_order_current")))
        == 0
    )


FACT_INDEXES_QUERY = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'fact_sales_order' ORDER BY indexname"
)


def test_large_fact_load_validates_foreign_keys_set_based(pg):
    """Above bulk_load_min_rows the foreign keys are re-validated in one pass and the version
    indexes rebuilt by one sort each; the result is the same table, indexes and constraints."""
    wh = WarehouseResource(url=pg.new_db("bulk"), bulk_load_min_rows=2)
    seed_dimensions(wh)
    indexes = fetch(wh, FACT_INDEXES_QUERY)
    assert [name for name, _ in indexes] == [
        "fact_sales_order_last_updated_date_idx",
        "fact_sales_order_pkey",
        "fact_sales_order_version_key",
    ]
    assert "USING brin" in indexes[0][1]  # rebuilt as it was, not as a b-tree
    # loaded newest first: record ids must still follow time
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, 10 - i)) for i in range(1, 6)]
    loaded = wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    assert loaded.bulk and loaded.inserted == 5
    assert fetch(wh, FACT_INDEXES_QUERY) == indexes
    ids = fetch(wh, "SELECT sales_order_id FROM fact_sales_order ORDER BY sales_record_id")
    assert [i for (i,) in ids] == [5, 4, 3, 2, 1]
    reloaded = wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    assert not reloaded.bulk and reloaded.skipped == 5  # nothing new: keys are left alone
    fks = fetch(
        wh,
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass "
        "AND contype = 'f'",
    )
    assert len(fks) == len(WAREHOUSE_TABLES["fact_sales_order"].foreign_keys) and all(v for _, v in fks)

    before = wh.read_table("fact_sales_order")
    bad = [sales_row(i, dt.datetime(2024, 11, 15, 10, 0, i)) for i in range(1, 6)] + [
        sales_row(6, dt.datetime(2024, 11, 15, 10), design_id=999)
    ]
    with pytest.raises(WarehouseLoadError) as err:
        wh.append_facts("fact_sales_order", frame("fact_sales_order", bad))
    message = str(err.value)
    assert "fact_sales_order" in message and "design_id" in message and "999" in message
    assert (err.value.table, err.value.column, err.value.value) == ("fact_sales_order", "design_id", "999")
    assert_frame_equal(wh.read_table("fact_sales_order"), before)
    assert sorted(
        fetch(
            wh,
            "SELECT conname, convalidated FROM pg_constraint WHERE "
            "conrelid = 'fact_sales_order'::regclass AND contype = 'f'",
        )
    ) == sorted(fks)
    assert fetch(wh, FACT_INDEXES_QUERY) == indexes


# -------------------------------------------------------------------------------------------------
# Bad input: a clear error, nothing lost
# -------------------------------------------------------------------------------------------------


def test_foreign_key_violation_names_table_column_value_and_changes_nothing(wh):
    seed_dimensions(wh)
    good = frame("fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 15, 9))])
    wh.append_facts("fact_sales_order", good)
    before = wh.read_table("fact_sales_order")
    bad = frame(
        "fact_sales_order",
        [
            sales_row(2, dt.datetime(2024, 11, 15, 10)),
            sales_row(3, dt.datetime(2024, 11, 15, 11), design_id=999),
        ],
    )
    with pytest.raises(WarehouseLoadError) as err:
        wh.append_facts("fact_sales_order", bad)
    message = str(err.value)
    assert "'fact_sales_order'" in message and "'design_id'" in message and "999" in message
    assert 'Key (design_id)=(999) is not present in table "dim_design"' in message
    assert "rolled back" in message
    assert err.value.constraint == "fact_sales_order_design_id_fkey"
    assert err.value.sqlstate == "23503"
    assert_frame_equal(wh.read_table("fact_sales_order"), before)


def test_null_in_a_not_null_column_is_named(wh):
    seed_dimensions(wh)
    wh.upsert_dimension("dim_location", frame("dim_location", [location_row(1, city="Before")]))
    with pytest.raises(WarehouseLoadError) as err:
        wh.upsert_dimension(
            "dim_location", frame("dim_location", [location_row(1, city="After"), location_row(7, city=None)])
        )
    message = str(err.value)
    assert "'dim_location'" in message and "'city'" in message and "NULL" in message
    assert "location_id=7" in message
    assert (err.value.column, err.value.sqlstate) == ("city", "23502")
    assert wh.read_table("dim_location")["city"].to_list() == [
        "Before",
        "New Patienceburgh",
        "New Patienceburgh",
    ]


def test_injected_fault_between_copy_and_commit_leaves_tables_as_they_were(wh):
    """The one injected fault: a load dying after COPY and INSERT but before COMMIT.

    A real crash at exactly that point cannot be produced otherwise, so the test hook
    `_before_commit` raises there; everything else in this file runs against the real database.
    """
    seed_dimensions(wh)
    wh.append_facts(
        "fact_sales_order", frame("fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 15, 9))])
    )
    facts_before = wh.read_table("fact_sales_order")
    dims_before = wh.read_table("dim_location")
    seen: list[int] = []

    def crash(conn: psycopg.Connection) -> None:
        seen.append(conn.execute("SELECT count(*) FROM fact_sales_order").fetchone()[0])  # type: ignore[index]
        raise RuntimeError("worker died before COMMIT")

    new_facts = frame("fact_sales_order", [sales_row(i, dt.datetime(2024, 11, 15, 10)) for i in (2, 3)])
    with pytest.raises(RuntimeError, match="before COMMIT"):
        wh.append_facts("fact_sales_order", new_facts, _before_commit=crash)
    with pytest.raises(RuntimeError, match="before COMMIT"):
        wh.upsert_dimension(
            "dim_location", frame("dim_location", [location_row(1, city="Gone")]), _before_commit=crash
        )
    assert seen[0] == 3  # the rows were in the table inside the transaction
    assert_frame_equal(wh.read_table("fact_sales_order"), facts_before)
    assert_frame_equal(wh.read_table("dim_location"), dims_before)
    # and the next load works normally
    assert wh.append_facts("fact_sales_order", new_facts).inserted == 2


def test_frame_problems_are_named_before_anything_is_loaded(wh):
    spec = WAREHOUSE_TABLES["fact_sales_order"]
    good = frame("fact_sales_order", [sales_row(1, dt.datetime(2024, 11, 15, 9))])
    with pytest.raises(WarehouseLoadError, match="'fact_sales_order'.*'units_sold' is missing"):
        wh.append_facts("fact_sales_order", good.drop("units_sold"))
    with pytest.raises(
        WarehouseLoadError, match="'sales_record_id' in the frame is assigned by the warehouse"
    ):
        wh.append_facts("fact_sales_order", good.with_columns(sales_record_id=pl.lit(1, pl.Int32)))
    with pytest.raises(WarehouseLoadError, match="'colour' in the frame is not a column"):
        wh.append_facts("fact_sales_order", good.with_columns(colour=pl.lit("red")))
    too_big = good.with_columns(unit_price=pl.Series([Decimal("123456789.99")], dtype=pl.Decimal(12, 2)))
    with pytest.raises(
        WarehouseLoadError, match=r"'unit_price': value Decimal\('123456789.99'\) does not fit numeric"
    ):
        wh.append_facts("fact_sales_order", too_big)
    with pytest.raises(WarehouseLoadError, match=r"'unit_price': value Decimal\('2.505'\) has more decimals"):
        prepare_frame(
            spec, good.with_columns(unit_price=pl.Series([Decimal("2.505")], dtype=pl.Decimal(10, 3)))
        )
    with pytest.raises(WarehouseLoadError, match="'unit_price': value 2.5 is a Float64"):
        prepare_frame(spec, good.with_columns(unit_price=pl.lit(2.5)))
    with pytest.raises(WarehouseLoadError, match="'created_date': value '2024-11-15' has dtype String"):
        prepare_frame(spec, good.with_columns(created_date=pl.lit("2024-11-15")))
    with pytest.raises(WarehouseLoadError, match="'units_sold': value 3000000000 does not fit integer"):
        prepare_frame(spec, good.with_columns(units_sold=pl.lit(3_000_000_000, pl.Int64)))
    with pytest.raises(
        WarehouseLoadError, match=r"'dim_design', column 'file_name': value 'a\\x00b' contains a NUL"
    ):
        wh.upsert_dimension(
            "dim_design",
            frame(
                "dim_design", [dict(design_id=1, design_name="ok", file_location="/x", file_name="a\x00b")]
            ),
        )
    clash = pl.concat([good, good.with_columns(units_sold=pl.lit(5, pl.Int32))])
    with pytest.raises(WarehouseLoadError, match="different rows for the same key sales_order_id=1"):
        wh.append_facts("fact_sales_order", clash)
    # exact duplicates are harmless, and wider integer dtypes are cast
    assert prepare_frame(spec, pl.concat([good, good]).cast({"units_sold": pl.Int64})).height == 1
    assert wh.row_counts()["fact_sales_order"] == 0


# -------------------------------------------------------------------------------------------------
# Values survive exactly
# -------------------------------------------------------------------------------------------------


TRICKY_TEXT = [
    "O'Keefe",
    "a,b",
    'say "hi"',
    "first line\nsecond line",
    "",
    "\\N",
    "NULL",
    "tab\there",
    "¿Qué? 🙂",
]


def test_tricky_values_round_trip_exactly(wh):
    seed_dimensions(wh)
    staff = frame(
        "dim_staff",
        [
            dict(
                staff_id=10 + i,
                first_name=text,
                last_name="O'Keefe",
                department_name="Dispatch",
                location=text,
                email_address="x@y.z",
            )
            for i, text in enumerate(TRICKY_TEXT)
        ],
    )
    wh.upsert_dimension("dim_staff", staff)
    locations = frame(
        "dim_location",
        [
            location_row(20, address_line_2="", district=None),
            location_row(21, address_line_2=None, district=""),
        ],
    )
    wh.upsert_dimension("dim_location", locations)
    assert_frame_equal(wh.read_table("dim_staff").filter(pl.col("staff_id") >= 10), staff)
    assert_frame_equal(wh.read_table("dim_location").filter(pl.col("location_id") >= 20), locations)
    # checked in SQL too, independently of read_table: '' stays '' and NULL stays NULL
    assert fetch(
        wh,
        "SELECT location_id, address_line_2, district FROM dim_location WHERE location_id >= 20 ORDER BY 1",
    ) == [(20, "", None), (21, None, "")]
    assert fetch(wh, "SELECT first_name FROM dim_staff WHERE staff_id >= 10 ORDER BY staff_id") == [
        (t,) for t in TRICKY_TEXT
    ]

    payments = frame(
        "fact_payment",
        [
            dict(
                payment_id=i,
                created_date=DAY,
                created_time=t,
                last_updated_date=DAY,
                last_updated_time=t,
                transaction_id=1,
                counterparty_id=1,
                payment_amount=amount,
                currency_id=1,
                payment_type_id=1,
                paid=paid,
                payment_date=DAY,
            )
            for i, (amount, t, paid) in enumerate(
                [
                    (Decimal("99999999.99"), dt.time(23, 59, 59, 999000), True),
                    (Decimal("0.01"), dt.time(0, 0, 0), False),
                    (Decimal("-12.30"), dt.time(7, 55, 0, 1000), True),
                    (Decimal("0.00"), dt.time(12, 0, 0, 120000), False),
                ],
                1,
            )
        ],
    )
    wh.append_facts("fact_payment", payments)
    back = wh.read_table("fact_payment")  # in record id order, which follows last_updated
    assert back["payment_id"].to_list() == [2, 3, 4, 1]
    assert_frame_equal(back.drop("payment_record_id").sort("payment_id"), payments)
    assert fetch(wh, "SELECT payment_amount, last_updated_time FROM fact_payment ORDER BY payment_id") == [
        (Decimal("99999999.99"), dt.time(23, 59, 59, 999000)),
        (Decimal("0.01"), dt.time(0, 0)),
        (Decimal("-12.30"), dt.time(7, 55, 0, 1000)),
        (Decimal("0.00"), dt.time(12, 0, 0, 120000)),
    ]
    # text that is a CSV NULL marker elsewhere is still text; the version is recognised on reload
    assert wh.append_facts("fact_payment", payments).skipped == 4


def test_copy_streams_large_frames_in_chunks(wh, monkeypatch):
    """A frame bigger than one COPY chunk arrives whole and in order."""
    from totesys_assets.resources.warehouse import frames

    monkeypatch.setattr(frames, "COPY_CHUNK_ROWS", 7)
    seed_dimensions(wh)
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, 0, i * 1000)) for i in range(1, 51)]
    assert wh.append_facts("fact_sales_order", frame("fact_sales_order", rows)).inserted == 50
    assert fetch(wh, "SELECT array_agg(sales_order_id ORDER BY sales_record_id) FROM fact_sales_order")[0][
        0
    ] == list(range(1, 51))


# -------------------------------------------------------------------------------------------------
# Reads, helpers, configuration
# -------------------------------------------------------------------------------------------------


def test_scalar_and_row_counts(wh):
    seed_dimensions(wh)
    counts = wh.row_counts()
    assert list(counts) == list(WAREHOUSE_TABLES)
    assert counts["dim_currency"] == 3 and counts["dim_date"] == 31 and counts["fact_payment"] == 0
    assert all(counts[name] > 0 for name in DIMENSION_NAMES)
    query = sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
        sql.Identifier("currency_name"), sql.Identifier("dim_currency"), sql.Identifier("currency_code")
    )
    assert wh.scalar(query, ("EUR",)) == "Euro"
    assert wh.scalar(query, ("XXX",)) is None
    counts_query = sql.SQL("SELECT count(*) AS currencies, max({}) AS last FROM {}").format(
        sql.Identifier("currency_id"), sql.Identifier("dim_currency")
    )
    assert wh.fetch_one_dict(counts_query) == {"currencies": 3, "last": 3}
    assert wh.fetch_one_dict(sql.SQL("SELECT 1 AS x WHERE false")) == {}
    with pytest.raises(KeyError, match="not a warehouse table or view"):
        wh.read_table("pg_class")


def test_read_table_of_an_empty_table_has_the_spec_schema(wh):
    empty = wh.read_table("fact_purchase_order")
    assert empty.height == 0 and empty.schema == WAREHOUSE_TABLES["fact_purchase_order"].polars_schema


def test_unset_url_uses_the_embedded_warehouse(pg, monkeypatch):
    from totesys_assets import embedded

    url = pg.new_db("embedded")
    monkeypatch.setattr(embedded, "warehouse_url", lambda: url)
    assert WarehouseResource().row_counts()["dim_date"] == 0


# -------------------------------------------------------------------------------------------------
# Secrets
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing socket directory", "unknown role on the real server"])
def test_connection_errors_name_the_url_without_the_password(pg, where):
    if where == "missing socket directory":
        url = "postgresql://postgres:s3cret@/warehouse?host=/tmp/no-such-totesys-socket-dir"
    else:  # the embedded server trusts every password, so make it refuse the user instead
        url = pg.url("postgres").replace("postgres:@", "nobody_here:s3cret@", 1)
    resource = WarehouseResource(url=url)
    for call in (resource.ensure_schema, resource.row_counts, lambda: resource.read_table("dim_date")):
        with pytest.raises(WarehouseConnectionError) as err:
            call()
        message = str(err.value)
        assert "s3cret" not in message and "s3cret" not in repr(err.value)
        assert "***@" in message and "cannot connect to the warehouse" in message
        if where == "missing socket directory":
            assert "/tmp/no-such-totesys-socket-dir" in message
        else:
            assert "nobody_here" in message


def test_password_in_the_query_string_is_masked_too():
    resource = WarehouseResource(url="postgresql:///warehouse?host=/tmp/no-such-dir-either&password=s3cret")
    with pytest.raises(WarehouseConnectionError) as err:
        resource.row_counts()
    assert "s3cret" not in str(err.value) and "password=***" in str(err.value)


def test_load_errors_never_contain_the_password(pg):
    url = pg.new_db("secret").replace("postgres:@", "postgres:s3cret@", 1)  # trusted: any password works
    wh = WarehouseResource(url=url)
    with pytest.raises(WarehouseLoadError) as err:
        wh.append_facts(
            "fact_payment",
            frame(
                "fact_payment",
                [
                    dict(
                        payment_id=1,
                        created_date=DAY,
                        created_time=dt.time(8),
                        last_updated_date=DAY,
                        last_updated_time=dt.time(8),
                        transaction_id=1,
                        counterparty_id=1,
                        payment_amount=Decimal("1.00"),
                        currency_id=1,
                        payment_type_id=1,
                        paid=False,
                        payment_date=DAY,
                    )
                ],
            ),
        )
    assert "s3cret" not in str(err.value) and "fact_payment" in str(err.value)


def test_load_result_metadata_for_facts():
    result = LoadResult(
        table="fact_payment",
        is_fact=True,
        rows=5,
        inserted=3,
        updated=0,
        unchanged=2,
        table_rows=10,
        seconds=0.5,
    )
    meta = result.metadata()
    assert meta["dagster/row_count"] == 10
    assert (meta["rows_inserted"], meta["versions_skipped"], result.skipped) == (3, 2, 2)
    assert "rows_updated" not in meta


def test_a_warehouse_recreated_while_the_process_runs_gets_its_schema_again(pg):
    """The per-process DDL cache must not break loads after the database is dropped and recreated."""
    url = pg.new_db("reset")
    wh = WarehouseResource(url=url)
    wh.ensure_schema()
    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(pg.base_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    result = wh.upsert_dimension(
        "dim_currency",
        frame("dim_currency", [dict(currency_id=1, currency_code="GBP", currency_name="Pound Sterling")]),
    )
    assert result.inserted == 1
    assert wh.read_table("dim_currency").height == 1


def test_two_concurrent_loads_of_the_same_versions_add_them_once(wh):
    """Load B starts while load A holds its uncommitted rows; B waits for A, then skips them."""
    import threading
    import time

    seed_dimensions(wh)
    versions = frame("fact_sales_order", [sales_row(i, dt.datetime(2024, 11, 15, 9, i)) for i in (1, 2, 3)])
    results: dict[str, LoadResult] = {}
    b_thread = threading.Thread(
        target=lambda: results.update(b=wh.append_facts("fact_sales_order", versions))
    )

    def start_b_and_wait_until_it_blocks(conn: psycopg.Connection) -> None:
        b_thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = fetch(
                wh,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'totesys_assets.warehouse' AND wait_event_type = 'Lock'",
            )
            if waiting[0][0]:
                return
            time.sleep(0.02)
        raise AssertionError("load B never waited for load A")

    results["a"] = wh.append_facts(
        "fact_sales_order", versions, _before_commit=start_b_and_wait_until_it_blocks
    )
    b_thread.join(timeout=60)
    assert (results["a"].inserted, results["b"].inserted, results["b"].skipped) == (3, 0, 3)
    assert wh.row_counts()["fact_sales_order"] == 3


def test_primary_key_check_counts_every_row_beyond_the_first(pg):
    """The check's query on a fact table whose unique constraint was dropped behind our back:
    a version stored four times counts 3, another twice counts 1; the run's-days scope applies."""
    wh = WarehouseResource(url=pg.new_db("pk_check"))
    seed_dimensions(wh)
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, i)) for i in range(1, 4)]
    wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    spec = WAREHOUSE_TABLES["fact_sales_order"]
    assert wh.scalar(primary_key_query(spec)) == 0
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.insert_columns)
    with psycopg.connect(wh.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_version_key")
        for sales_order_id in (1, 1, 2):
            conn.execute(
                sql.SQL(
                    "INSERT INTO fact_sales_order ({c}) SELECT {c} FROM fact_sales_order WHERE sales_order_id = %s"
                ).format(c=cols),
                [sales_order_id],
            )
    # (each INSERT copies every row the id has so far: id 1 -> 2 -> 4 rows, id 2 -> 2 rows)
    assert wh.scalar(primary_key_query(spec)) == 4
    day, other = Scope(["2024-11-15"]), Scope(["2024-11-16"])
    assert wh.scalar(primary_key_query(spec, day), day.params) == 4
    assert wh.scalar(primary_key_query(spec, other), other.params) == 0


def test_first_bulk_load_copies_straight_in_with_the_same_result(pg):
    """A large first load COPYs into the empty table (no staging): the tables, record ids and
    constraints come out exactly as through the staged INSERT / upsert."""
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, 30 - i)) for i in range(1, 21)]
    direct = WarehouseResource(url=pg.new_db("direct"), bulk_load_min_rows=2)
    staged = WarehouseResource(url=pg.new_db("staged"), bulk_load_min_rows=10**9)
    later = [sales_row(21, dt.datetime(2024, 11, 16, 9))]
    for wh in (direct, staged):
        seed_dimensions(wh)
        # an emptied table whose serial has moved on (ids 1..41 used before): ids continue at 42
        wh.scalar(sql.SQL("SELECT setval(pg_get_serial_sequence('fact_sales_order', 'sales_record_id'), 41)"))
        result = wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
        assert (result.inserted, result.table_rows, result.bulk) == (20, 20, wh is direct)
        assert wh.append_facts("fact_sales_order", frame("fact_sales_order", later)).inserted == 1
    assert_frame_equal(direct.read_table("fact_sales_order"), staged.read_table("fact_sales_order"))
    assert direct.read_table("fact_sales_order")["sales_record_id"].to_list() == list(range(42, 63))
    # the dimensions seeded above took the same first-load path (empty tables, >= 2 rows)
    for dim in DIMENSION_NAMES:
        assert_frame_equal(direct.read_table(dim), staged.read_table(dim))
    assert fetch(direct, FACT_INDEXES_QUERY) == fetch(staged, FACT_INDEXES_QUERY)
    constraints = "SELECT conname, contype, convalidated FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass ORDER BY 1"
    assert fetch(direct, constraints) == fetch(staged, constraints)
    # Every key of the schema is back, the dimensions' primary keys (rebuilt on their first load,
    # with the facts' foreign keys to them) included.
    everything = (
        "SELECT conrelid::regclass::text, conname, contype, convalidated, pg_get_constraintdef(oid) "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
    )
    assert fetch(direct, everything) == fetch(staged, everything)
    assert ("dim_staff", "dim_staff_pkey", "p", True, "PRIMARY KEY (staff_id)") in fetch(direct, everything)
    indexes = (
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
    )
    assert fetch(direct, indexes) == fetch(staged, indexes)
    # and a reload is the usual no-op
    again = direct.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    assert (again.inserted, again.skipped) == (0, 20)


@pytest.mark.parametrize("first_load", [True, False])
def test_a_load_in_chunks_is_one_transaction_with_the_rows_and_record_ids_of_one_frame(pg, first_load):
    """Chunks (oldest days first) load as their concatenation does, through the first load (serial
    ids numbered chunk after chunk) and the staged path alike; a bad row in a later chunk rolls
    back the chunks before it."""
    min_rows = 2 if first_load else 10**9
    rows = [sales_row(i, dt.datetime(2024, 11, 15 + i % 3, 9, 0, 30 - i)) for i in range(1, 21)]
    by_day = [
        frame("fact_sales_order", [r for r in rows if r["last_updated_date"].day == d]) for d in (15, 16, 17)
    ]
    whole, chunked = (
        WarehouseResource(url=pg.new_db(n), bulk_load_min_rows=min_rows) for n in ("whole", "chunked")
    )
    for wh in (whole, chunked):
        seed_dimensions(wh)
        wh.scalar(sql.SQL("SELECT setval(pg_get_serial_sequence('fact_sales_order', 'sales_record_id'), 41)"))
    one = whole.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    parts = chunked.append_facts("fact_sales_order", iter(by_day))
    assert (parts.rows, parts.inserted, parts.table_rows, parts.bulk) == (one.rows, 20, 20, first_load)
    assert_frame_equal(whole.read_table("fact_sales_order"), chunked.read_table("fact_sales_order"))
    assert chunked.read_table("fact_sales_order")["sales_record_id"].to_list() == list(range(42, 62))

    bad = WarehouseResource(url=pg.new_db("chunked_bad"), bulk_load_min_rows=min_rows)
    seed_dimensions(bad)
    broken = frame("fact_sales_order", [sales_row(99, dt.datetime(2024, 11, 18, 10), design_id=999)])
    with pytest.raises(WarehouseLoadError) as err:
        bad.append_facts("fact_sales_order", iter([*by_day, broken]))
    assert (err.value.table, err.value.column, err.value.value) == ("fact_sales_order", "design_id", "999")
    assert bad.read_table("fact_sales_order").is_empty()
    assert bad.append_facts("fact_sales_order", iter(by_day)).inserted == 20
    if first_load:  # (which took no record ids: the staged path's nextval() is not rolled back)
        assert bad.read_table("fact_sales_order")["sales_record_id"].to_list() == list(range(1, 21))


def test_first_bulk_load_with_a_bad_key_leaves_the_table_empty_and_intact(pg):
    wh = WarehouseResource(url=pg.new_db("direct_bad"), bulk_load_min_rows=2)
    seed_dimensions(wh)
    indexes = fetch(wh, FACT_INDEXES_QUERY)
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, i)) for i in range(1, 4)]
    rows.append(sales_row(4, dt.datetime(2024, 11, 15, 10), design_id=999))
    with pytest.raises(WarehouseLoadError) as err:
        wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    assert (err.value.table, err.value.column, err.value.value) == ("fact_sales_order", "design_id", "999")
    assert wh.read_table("fact_sales_order").is_empty()
    assert fetch(wh, FACT_INDEXES_QUERY) == indexes
    fks = "SELECT count(*) FROM pg_constraint WHERE conrelid = 'fact_sales_order'::regclass AND contype = 'f'"
    assert fetch(wh, fks) == [(len(WAREHOUSE_TABLES["fact_sales_order"].foreign_keys),)]
    # the failed load took no record ids: the next one numbers from 1, as if it had never run
    wh.append_facts("fact_sales_order", frame("fact_sales_order", rows[:3]))
    assert wh.read_table("fact_sales_order")["sales_record_id"].to_list() == [1, 2, 3]


def test_checks_trust_enforced_constraints_and_count_what_is_not_enforced(pg):
    """With every constraint in place the key, NOT NULL and FK checks pass from the catalog (naming
    the constraint). Remove the guarantees behind the loader's back (drop the unique key, a NOT NULL
    and a foreign key, disable another FK's triggers), store bad rows, and each check counts them."""
    wh = WarehouseResource(url=pg.new_db("enforced"))
    seed_dimensions(wh)
    rows = [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, i)) for i in range(1, 4)]
    wh.append_facts("fact_sales_order", frame("fact_sales_order", rows))
    spec = WAREHOUSE_TABLES["fact_sales_order"]
    scope = Scope(["2024-11-15"])

    pk, nn, fk = (
        f(wh, spec, scope) for f in (evaluate_primary_key, evaluate_not_null, evaluate_foreign_keys)
    )
    assert pk.passed and pk.metadata["enforced_by"].value == "fact_sales_order_version_key"
    assert nn.passed and nn.metadata["counted_columns"].value == "none"
    assert fk.passed and fk.metadata["counted_columns"].value == "none"
    assert len(fk.metadata["enforced_by"].value) == len(spec.foreign_keys)

    cols = sql.SQL(", ").join(sql.Identifier(c) for c in spec.insert_columns)
    with psycopg.connect(wh.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_version_key")
        conn.execute("ALTER TABLE fact_sales_order ALTER COLUMN units_sold DROP NOT NULL")
        conn.execute("ALTER TABLE fact_sales_order DROP CONSTRAINT fact_sales_order_design_id_fkey")
        conn.execute("ALTER TABLE fact_sales_order DISABLE TRIGGER ALL")  # the other FKs' triggers
        copy_row = sql.SQL(
            "INSERT INTO fact_sales_order ({c}) SELECT {c} FROM fact_sales_order WHERE sales_order_id = 1"
        ).format(c=cols)
        conn.execute(copy_row)  # a duplicate version
        conn.execute("UPDATE fact_sales_order SET units_sold = NULL WHERE sales_order_id = 2")
        conn.execute(
            "UPDATE fact_sales_order SET design_id = 999, counterparty_id = 998 WHERE sales_order_id = 3"
        )

    pk, nn, fk = (
        f(wh, spec, scope) for f in (evaluate_primary_key, evaluate_not_null, evaluate_foreign_keys)
    )
    assert not pk.passed and pk.metadata["duplicate_keys"].value == 1
    assert pk.metadata["enforced_by"].value == "none (counted)"
    assert not nn.passed and nn.metadata["null_counts"].value == {"units_sold": 1}
    assert nn.metadata["counted_columns"].value == ["units_sold"]
    assert not fk.passed and fk.metadata["orphans"].value == {"design_id": 1, "counterparty_id": 1}
    assert set(fk.metadata["counted_columns"].value) == {c.name for c in spec.foreign_keys}
    # outside the run's days nothing is counted
    other = Scope(["2024-11-16"])
    assert evaluate_primary_key(wh, spec, other).passed and evaluate_foreign_keys(wh, spec, other).passed


def purchase_row(order_id: int, updated: dt.datetime, **changes) -> dict:
    created = dt.datetime(2024, 11, 14, 8, 30)
    row = dict(
        purchase_order_id=order_id,
        created_date=created.date(),
        created_time=created.time(),
        last_updated_date=updated.date(),
        last_updated_time=updated.time(),
        staff_id=2,
        counterparty_id=1,
        item_code="ZDOI5EA",
        item_quantity=10 + order_id,
        item_unit_price=Decimal("361.39"),
        currency_id=2,
        agreed_delivery_date=DAY + dt.timedelta(days=2),
        agreed_payment_date=DAY,
        agreed_delivery_location_id=3,
    )
    return {**row, **changes}


EVERY_CONSTRAINT = (
    "SELECT conrelid::regclass::text, conname, contype, convalidated, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"
)
EVERY_INDEX = (
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
)
SIDE_BY_SIDE = ["fact_sales_order", "fact_purchase_order"]


def _dimension_locks(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT relation::regclass::text FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND relation::regclass::text LIKE 'dim%' ORDER BY 1"
        ).fetchall()
    ]


def test_two_first_fact_loads_take_turns_only_after_their_copy(pg):
    """The facts step loads two empty facts at once. Dropping a fact's foreign keys locks the
    dimensions they reference until COMMIT, and all of that is inside each load's own transaction;
    a first load COPYs its rows into a temporary stage before it locks any dimension, so while one
    load holds the dimensions the other gets through its COPY and waits only to move its rows in.
    Afterwards the schema and the rows are exactly as loaded one at a time."""
    from totesys_assets.resources.warehouse.statements import bulk_drop_statements

    wh = WarehouseResource(url=pg.new_db("side_by_side"), bulk_load_min_rows=2)
    serial = WarehouseResource(url=pg.new_db("one_at_a_time"), bulk_load_min_rows=2)
    sales = frame("fact_sales_order", [sales_row(i, dt.datetime(2024, 11, 15, 9, 0, i)) for i in range(1, 6)])
    purchases = frame(
        "fact_purchase_order", [purchase_row(i, dt.datetime(2024, 11, 15, 10, 0, i)) for i in range(1, 4)]
    )
    for resource in (wh, serial):
        seed_dimensions(resource)
    before = fetch(wh, EVERY_CONSTRAINT)

    results: dict[str, LoadResult] = {}
    with psycopg.connect(wh.url, autocommit=True) as sales_load:  # type: ignore[arg-type]
        # the sales load in its last part: its foreign keys dropped, the dimensions locked
        sales_load.execute("BEGIN")
        for statement in bulk_drop_statements(WAREHOUSE_TABLES["fact_sales_order"]):
            sales_load.execute(statement)
        assert "dim_date" in _dimension_locks(sales_load)
        assert fetch(wh, EVERY_CONSTRAINT) == before  # uncommitted: nobody else sees a key missing
        other = threading.Thread(
            target=lambda: results.setdefault("purchases", wh.append_facts("fact_purchase_order", purchases))
        )
        other.start()
        deadline = time.monotonic() + 30
        waiting = None
        while time.monotonic() < deadline and waiting is None:
            waiting = fetch(
                wh,
                "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> %s",
                (sales_load.info.backend_pid,),
            )
            waiting = waiting[0][0] if waiting else None
            time.sleep(0.02)
        # the purchase load has COPYed its rows and waits at the dimensions' lock
        assert waiting is not None and waiting.startswith("LOCK TABLE") and "dim_" in waiting, waiting
        sales_load.execute("ROLLBACK")
        other.join(60)
    assert (results["purchases"].inserted, results["purchases"].bulk) == (3, True)
    assert wh.append_facts("fact_sales_order", sales).inserted == 5
    serial.append_facts("fact_purchase_order", purchases)
    serial.append_facts("fact_sales_order", sales)
    assert fetch(wh, EVERY_CONSTRAINT) == fetch(serial, EVERY_CONSTRAINT) == before
    assert fetch(wh, EVERY_INDEX) == fetch(serial, EVERY_INDEX)
    for table in SIDE_BY_SIDE:
        assert_frame_equal(wh.read_table(table), serial.read_table(table))
