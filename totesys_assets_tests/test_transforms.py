"""The star transforms on real totesys rows (the 2024-11-15 export), with exact expected values.

Small frames are cut from the real tables; where a case needs a second version of a row or a
broken value, it is derived from a real row. The other team's warehouse output for the same
export serves as independent evidence once its conventions (all strings, 'NULL', Monday=0) are
normalised.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_assets.star import transforms as T
from totesys_assets.star.assets import DIMENSIONS, FACTS
from totesys_assets.star.transforms import TransformError, validate_frame

pytestmark = pytest.mark.reference

SNAPSHOT_DAY = dt.date(2024, 11, 15)
FACT_NAMES = [f.name for f in FACTS]


def to_lake_schema(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """The export's pandas dtypes (Int64, float money and nullable ids, ns) as the lake's schema."""
    exprs = []
    for name, dtype in SOURCE_TABLES[table].polars_schema.items():
        column = pl.col(name).round(2) if isinstance(dtype, pl.Decimal) else pl.col(name)
        exprs.append(column.cast(dtype))
    return frame.select(exprs)


@pytest.fixture(scope="session")
def oltp(reference_dir: Path) -> dict[str, pl.DataFrame]:
    folder = reference_dir / "oltp_2024-11-15_parquet"
    return {t: to_lake_schema(pl.read_parquet(folder / f"{t}.parquet"), t) for t in SOURCE_TABLES}


@pytest.fixture(scope="session")
def star(oltp: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Every warehouse table built from the whole export, as the star assets wire them."""
    out = {table.name: table.transform(*(oltp[t] for t in table.sources)) for table in [*DIMENSIONS, *FACTS]}
    out["dim_date"] = T.dim_date(*T.dim_date_range([out[n] for n in FACT_NAMES], SNAPSHOT_DAY))
    return out


def theirs(reference_dir: Path, name: str) -> pl.DataFrame:
    """The other team's table typed like ours: 'NULL' -> null, strings -> warehouse dtypes."""
    frame = pl.read_parquet(reference_dir / "warehouse_2024-11-15_parquet" / f"{name}.parquet")
    schema = WAREHOUSE_TABLES[name].polars_schema
    exprs = []
    for column in frame.columns:
        dtype = schema[column]
        value = pl.col(column)
        if frame.schema[column] == pl.String:
            value = pl.when(value != "NULL").then(value)
            if dtype == pl.Date:
                value = value.str.to_date("%Y-%m-%d")
            elif dtype == pl.Time:
                value = value.str.to_time("%H:%M:%S%.f")
            elif dtype == pl.Boolean:
                value = value == "True"
        exprs.append(value.cast(dtype).alias(column))
    return frame.select(exprs)


def rows(frame: pl.DataFrame, key: str, *ids: int) -> pl.DataFrame:
    return frame.filter(pl.col(key).is_in(ids))


def one(frame: pl.DataFrame, key: str, value: object) -> dict:
    matches = frame.filter(pl.col(key) == value)
    assert matches.height == 1, f"{key}={value}: {matches.height} rows"
    return matches.row(0, named=True)


def warehouse_schema(name: str) -> pl.Schema:
    spec = WAREHOUSE_TABLES[name]
    return pl.Schema({c: spec.polars_schema[c] for c in spec.insert_columns})


# --- dimensions ----------------------------------------------------------------------------------


def test_dim_staff_joins_department_and_keeps_apostrophe(oltp):
    out = T.dim_staff(rows(oltp["staff"], "staff_id", 1, 17), oltp["department"])
    assert out["staff_id"].to_list() == [1, 17]
    assert one(out, "staff_id", 17) == {
        "staff_id": 17,
        "first_name": "Irving",
        "last_name": "O'Keefe",
        "department_name": "Production",
        "location": "Leeds",
        "email_address": "irving.o'keefe@terrifictotes.com",
    }
    assert "manager" not in out.columns


def test_dim_staff_missing_department_is_an_error(oltp):
    departments = oltp["department"].filter(pl.col("department_id") != 3)
    with pytest.raises(
        TransformError, match=r"dim_staff.*staff\.department_id.*staff_id=17, department_id=3"
    ):
        T.dim_staff(rows(oltp["staff"], "staff_id", 1, 17), departments)


def test_dim_staff_uses_the_latest_version_of_staff_and_department(oltp):
    staff = rows(oltp["staff"], "staff_id", 17)
    moved = staff.with_columns(
        department_id=pl.lit(4, pl.Int32), last_updated=pl.col("last_updated") + dt.timedelta(days=30)
    )
    out = T.dim_staff(pl.concat([moved, staff]), oltp["department"])
    assert one(out, "staff_id", 17)["department_name"] == "Dispatch"
    assert one(out, "staff_id", 17)["location"] == "Leds"  # source spelling kept


def test_dim_location_renames_address_id(oltp):
    out = T.dim_location(rows(oltp["address"], "address_id", 7, 15))
    assert one(out, "location_id", 7)["postal_code"] == "02813"
    assert one(out, "location_id", 15) == {
        "location_id": 15,
        "address_line_1": "605 Haskell Trafficway",
        "address_line_2": "Axel Freeway",
        "district": None,
        "city": "East Bobbie",
        "postal_code": "88253-4257",
        "country": "Heard Island and McDonald Islands",
        "phone": "9687 937447",
    }


def test_dim_counterparty_flattens_legal_address_15(oltp):
    out = T.dim_counterparty(rows(oltp["counterparty"], "counterparty_id", 1), oltp["address"])
    address_15 = one(oltp["address"], "address_id", 15)
    counterparty_1 = one(out, "counterparty_id", 1)
    assert counterparty_1["counterparty_legal_name"] == "Fahey and Sons"
    for column in ["address_line_1", "address_line_2", "district", "city", "postal_code", "country"]:
        assert counterparty_1[f"counterparty_legal_{column}"] == address_15[column], column
    assert counterparty_1["counterparty_legal_phone_number"] == address_15["phone"] == "9687 937447"
    assert counterparty_1["counterparty_legal_address_line_1"] == "605 Haskell Trafficway"
    assert counterparty_1["counterparty_legal_district"] is None
    assert not {"commercial_contact", "delivery_contact", "legal_address_id"} & set(out.columns)


def test_dim_counterparty_missing_address_is_an_error(oltp):
    addresses = oltp["address"].filter(pl.col("address_id") != 15)
    with pytest.raises(TransformError, match=r"dim_counterparty.*counterparty_id=1, legal_address_id=15"):
        T.dim_counterparty(rows(oltp["counterparty"], "counterparty_id", 1, 2), addresses)


def test_dim_currency_names_from_fixed_mapping(oltp):
    out = T.dim_currency(oltp["currency"])
    assert out.rows() == [(1, "GBP", "Pound Sterling"), (2, "USD", "US Dollar"), (3, "EUR", "Euro")]


def test_dim_currency_unknown_code_is_an_error(oltp):
    yen = oltp["currency"].head(1).with_columns(currency_id=pl.lit(4, pl.Int32), currency_code=pl.lit("JPY"))
    with pytest.raises(TransformError, match=r"dim_currency\.currency_code.*'JPY'.*currency_id=4"):
        T.dim_currency(pl.concat([oltp["currency"], yen]))


def test_dim_design_and_payment_type_drop_timestamps(oltp):
    design = T.dim_design(rows(oltp["design"], "design_id", 8))
    assert design.rows() == [(8, "Wooden", "/usr", "wooden-20220717-npgz.json")]
    payment_types = T.dim_payment_type(oltp["payment_type"])
    assert payment_types.rows() == [
        (1, "SALES_RECEIPT"),
        (2, "SALES_REFUND"),
        (3, "PURCHASE_PAYMENT"),
        (4, "PURCHASE_REFUND"),
    ]


def test_dim_transaction_keeps_null_order_ids(oltp):
    out = T.dim_transaction(rows(oltp["transaction"], "transaction_id", 1, 3))
    assert out.rows() == [(1, "PURCHASE", None, 2), (3, "SALE", 1, None)]


# --- versions ------------------------------------------------------------------------------------


def payment_1_before_and_after_paid(oltp) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Real payment 1 (paid on 2022-11-07 07:55) and the version it replaced (unpaid, as created)."""
    after = rows(oltp["payment"], "payment_id", 1)
    before = after.with_columns(paid=pl.lit(False), last_updated=pl.col("created_at"))
    return before, after


def test_fact_payment_keeps_a_row_per_version_around_the_paid_flip(oltp):
    before, after = payment_1_before_and_after_paid(oltp)
    out = T.fact_payment(pl.concat([after, before]))
    assert out.select("payment_id", "last_updated_date", "last_updated_time", "paid").rows() == [
        (1, dt.date(2022, 11, 3), dt.time(14, 20, 52, 186000), False),
        (1, dt.date(2022, 11, 7), dt.time(7, 55, 11, 885000), True),
    ]
    assert set(out["created_time"]) == {dt.time(14, 20, 52, 186000)}


def test_latest_versions_picks_the_paid_version(oltp):
    before, after = payment_1_before_and_after_paid(oltp)
    for versions in [pl.concat([before, after]), pl.concat([after, before])]:
        latest = T.latest_versions(versions, "payment")
        assert latest.height == 1
        assert latest.row(0, named=True)["paid"] is True
        assert latest.row(0, named=True)["last_updated"] == dt.datetime(2022, 11, 7, 7, 55, 11, 885000)


def test_latest_versions_breaks_last_updated_ties_independent_of_order(oltp):
    before, after = payment_1_before_and_after_paid(oltp)
    rival = after.with_columns(paid=pl.lit(False))  # same id and last_updated, other content
    first = T.latest_versions(pl.concat([after, rival]), "payment")
    second = T.latest_versions(pl.concat([rival, after, before]), "payment")
    assert_frame_equal(first, second)
    assert first.height == 1


def test_fact_keeps_one_row_per_version_key_independent_of_order(oltp):
    _, after = payment_1_before_and_after_paid(oltp)
    rival = after.with_columns(paid=pl.lit(False))  # same payment_id and last_updated, other content
    first = T.fact_payment(pl.concat([after, rival]))
    assert first.height == 1
    assert_frame_equal(first, T.fact_payment(pl.concat([rival, after, rival])))
    assert_frame_equal(first.select(pl.exclude("paid")), T.fact_payment(after).select(pl.exclude("paid")))


def test_facts_drop_exact_duplicate_versions(oltp):
    sales = rows(oltp["sales_order"], "sales_order_id", 1, 2, 3)
    assert_frame_equal(T.fact_sales_order(pl.concat([sales, sales.reverse()])), T.fact_sales_order(sales))


def test_outputs_do_not_depend_on_input_row_order(oltp, star):
    shuffled = oltp["payment"].sample(fraction=1.0, shuffle=True, seed=7)
    assert_frame_equal(T.fact_payment(shuffled), star["fact_payment"])
    assert_frame_equal(T.dim_transaction(oltp["transaction"].reverse()), star["dim_transaction"])


# --- facts ---------------------------------------------------------------------------------------


def test_fact_sales_order_2(oltp):
    out = T.fact_sales_order(rows(oltp["sales_order"], "sales_order_id", 2))
    assert out.row(0, named=True) == {
        "sales_order_id": 2,
        "created_date": dt.date(2022, 11, 3),
        "created_time": dt.time(14, 20, 52, 186000),
        "last_updated_date": dt.date(2022, 11, 3),
        "last_updated_time": dt.time(14, 20, 52, 186000),
        "sales_staff_id": 19,
        "counterparty_id": 8,
        "units_sold": 42972,
        "unit_price": Decimal("3.94"),
        "currency_id": 2,
        "design_id": 3,
        "agreed_payment_date": dt.date(2022, 11, 8),
        "agreed_delivery_date": dt.date(2022, 11, 7),
        "agreed_delivery_location_id": 8,
        # a frame not read from the lake carries the values of a legacy capture
        "version_hash": "0",
        "captured_at": dt.datetime(1970, 1, 1),
    }


def test_fact_payment_drops_account_numbers(oltp):
    out = T.fact_payment(rows(oltp["payment"], "payment_id", 2))
    assert out.columns == WAREHOUSE_TABLES["fact_payment"].insert_columns
    assert one(out, "payment_id", 2)["payment_amount"] == Decimal("552548.62")


@pytest.mark.parametrize("bad", ["2024-13-45", "2024-02-30", "2024-1-2", "07/11/2022", "", "+2024-01-02"])
def test_unparseable_text_date_names_table_column_value_and_row(oltp, bad):
    sales = rows(oltp["sales_order"], "sales_order_id", 1, 2).with_columns(
        agreed_delivery_date=pl.when(pl.col("sales_order_id") == 2)
        .then(pl.lit(bad))
        .otherwise(pl.col("agreed_delivery_date"))
    )
    with pytest.raises(TransformError) as error:
        T.fact_sales_order(sales)
    message = str(error.value)
    for part in ["fact_sales_order", "sales_order.agreed_delivery_date", repr(bad), "sales_order_id=2"]:
        assert part in message


def test_unparseable_payment_date_is_named(oltp):
    payment = rows(oltp["payment"], "payment_id", 3).with_columns(payment_date=pl.lit("2022-11-3"))
    with pytest.raises(TransformError, match=r"payment\.payment_date value '2022-11-3'.*payment_id=3"):
        T.fact_payment(payment)


@pytest.mark.parametrize("bad", ["2024-13-45", "", "2024-1-2"])
def test_split_fact_sets_a_bad_version_aside_and_keeps_the_others(oltp, bad):
    """The facts step's lenient path: the version with the bad date is set aside, naming its key,
    column and value; every other version comes out exactly as the strict transform makes it."""
    sales = rows(oltp["sales_order"], "sales_order_id", 1, 2, 3)
    broken = sales.with_columns(
        agreed_delivery_date=pl.when(pl.col("sales_order_id") == 2)
        .then(pl.lit(bad))
        .otherwise(pl.col("agreed_delivery_date"))
    )
    split = T.split_fact("fact_sales_order", broken)
    assert_frame_equal(split.frame, T.fact_sales_order(sales.filter(pl.col("sales_order_id") != 2)))
    assert split.rejected_versions == 1
    (rejected,) = split.rejected.rows(named=True)
    assert (rejected["source_table"], rejected["source_id"], rejected["column_name"], rejected["value"]) == (
        "sales_order", 2, "agreed_delivery_date", bad,
    )  # fmt: skip
    assert rejected["reason"] == "is not a %Y-%m-%d date"
    assert rejected["last_updated"] == one(sales, "sales_order_id", 2)["last_updated"]
    assert f'"agreed_delivery_date":"{bad}"' in rejected["source_row"]
    # nothing to set aside: the same frame as the strict transform, no rejection
    clean = T.split_fact("fact_sales_order", sales)
    assert_frame_equal(clean.frame, T.fact_sales_order(sales))
    assert clean.rejected.is_empty() and clean.rejected.schema == T.REJECTED_SCHEMA


def test_split_fact_sets_aside_nulls_and_values_without_a_dimension_row(oltp):
    payment = rows(oltp["payment"], "payment_id", 2, 3, 4).with_columns(
        currency_id=pl.when(pl.col("payment_id") == 3).then(None).otherwise(pl.col("currency_id")),
        counterparty_id=pl.when(pl.col("payment_id") == 4).then(999).otherwise(pl.col("counterparty_id")),
    )
    keys = {"counterparty_id": pl.Series(range(1, 21), dtype=pl.Int32)}
    split = T.split_fact("fact_payment", payment, keys)
    assert split.frame["payment_id"].to_list() == [2]
    assert sorted(split.rejected.select("source_id", "column_name", "value", "reason").rows()) == [
        (3, "currency_id", None, "is NULL, and fact_payment needs a value"),
        (4, "counterparty_id", "999", "has no row in dim_counterparty"),
    ]
    # the account numbers, which the star leaves out, stay out of the rejected rows too
    assert "account" not in split.rejected["source_row"][0]


def test_input_with_the_wrong_dtype_is_an_error(reference_dir):
    raw = pl.read_parquet(reference_dir / "oltp_2024-11-15_parquet" / "sales_order.parquet")
    with pytest.raises(TransformError, match=r"sales_order\.sales_order_id: input dtype is Int64"):
        T.fact_sales_order(raw)


# --- validate_frame ------------------------------------------------------------------------------


def test_null_in_not_null_column_is_named(oltp):
    location = T.dim_location(oltp["address"]).with_columns(
        city=pl.when(pl.col("location_id") == 15).then(None).otherwise(pl.col("city"))
    )
    with pytest.raises(
        TransformError, match=r"dim_location\.city: NULL in a NOT NULL column.*location_id=15"
    ):
        validate_frame(WAREHOUSE_TABLES["dim_location"], location)


def test_transform_output_with_a_null_fails_validation(oltp):
    departments = oltp["department"].with_columns(
        location=pl.when(pl.col("department_id") == 3).then(None).otherwise(pl.col("location"))
    )
    with pytest.raises(TransformError, match=r"dim_staff\.location: NULL.*staff_id=17"):
        T.dim_staff(rows(oltp["staff"], "staff_id", 1, 17), departments)


def test_nullable_columns_may_be_null(star):
    validate_frame(WAREHOUSE_TABLES["dim_location"], star["dim_location"])
    assert star["dim_location"]["address_line_2"].null_count() == 20
    assert star["dim_location"]["district"].null_count() == 14


def test_duplicate_primary_key_is_an_error(star):
    doubled = pl.concat([star["dim_design"], rows(star["dim_design"], "design_id", 8)])
    with pytest.raises(TransformError, match=r"dim_design: duplicate primary key \(design_id=8; 2 row"):
        validate_frame(WAREHOUSE_TABLES["dim_design"], doubled)


@pytest.mark.parametrize("sorted_by_key", [False, True])
def test_duplicate_natural_key_is_an_error(star, sorted_by_key):
    payments = rows(star["fact_payment"], "payment_id", 1, 2, 3)
    rival = rows(payments, "payment_id", 2).with_columns(paid=~pl.col("paid"))
    doubled = pl.concat([payments, rival]).sort(WAREHOUSE_TABLES["fact_payment"].natural_key)
    with pytest.raises(
        TransformError,
        match=r"fact_payment: duplicate natural key \(payment_id=2, last_updated_date=2022-11-03.*; 2 row",
    ):
        validate_frame(WAREHOUSE_TABLES["fact_payment"], doubled, sorted_by_key=sorted_by_key)


def test_wrong_columns_are_errors(star):
    spec = WAREHOUSE_TABLES["dim_currency"]
    with pytest.raises(TransformError, match=r"dim_currency: frame has no column 'currency_name'"):
        validate_frame(spec, star["dim_currency"].drop("currency_name"))
    with pytest.raises(TransformError, match=r"dim_currency\.currency_id: dtype is Int64"):
        validate_frame(spec, star["dim_currency"].cast({"currency_id": pl.Int64}))


# --- dim_date ------------------------------------------------------------------------------------


def test_dim_date_rows_and_contiguity():
    out = T.dim_date(dt.date(2024, 1, 1), dt.date(2024, 12, 31))
    assert out.height == 366
    assert out["date_id"].diff().drop_nulls().unique().to_list() == [dt.timedelta(days=1)]
    assert one(out, "date_id", dt.date(2024, 3, 31)) == {
        "date_id": dt.date(2024, 3, 31),
        "year": 2024,
        "month": 3,
        "day": 31,
        "day_of_week": 7,
        "day_name": "Sunday",
        "month_name": "March",
        "quarter": 1,
    }
    assert one(out, "date_id", dt.date(2024, 12, 31)) == {
        "date_id": dt.date(2024, 12, 31),
        "year": 2024,
        "month": 12,
        "day": 31,
        "day_of_week": 2,
        "day_name": "Tuesday",
        "month_name": "December",
        "quarter": 4,
    }
    quarters = dict(out.select("month", "quarter").unique().iter_rows())
    assert quarters == {m: (m - 1) // 3 + 1 for m in range(1, 13)}
    assert one(out, "date_id", dt.date(2024, 4, 1))["day_of_week"] == 1
    assert out.schema == warehouse_schema("dim_date")


def test_dim_date_rejects_an_inverted_range():
    with pytest.raises(TransformError, match="start 2024-02-01 is after end 2024-01-01"):
        T.dim_date(dt.date(2024, 2, 1), dt.date(2024, 1, 1))


def test_dim_date_range_rule(star, oltp):
    facts = [star[n] for n in FACT_NAMES]
    assert T.dim_date_range(facts, SNAPSHOT_DAY) == (dt.date(2022, 11, 1), dt.date(2025, 11, 15))
    # With "today" long ago, the latest referenced date wins: purchase order agreed delivery.
    assert T.dim_date_range(facts, dt.date(2022, 1, 1)) == (dt.date(2022, 11, 1), dt.date(2024, 11, 22))
    early = rows(oltp["sales_order"], "sales_order_id", 2).with_columns(
        agreed_payment_date=pl.lit("2021-06-30")
    )
    assert T.dim_date_range([T.fact_sales_order(early)], SNAPSHOT_DAY)[0] == dt.date(2021, 6, 30)
    empty = [WAREHOUSE_TABLES[n].empty_frame() for n in FACT_NAMES]
    assert T.dim_date_range(empty, SNAPSHOT_DAY) == (dt.date(2022, 11, 1), dt.date(2025, 11, 15))


def test_dim_date_range_from_the_raw_date_columns_matches_the_facts(star, oltp):
    """dim_date's range from the raw date columns alone equals the range of the built facts."""
    sources = [(f.sources[0], f.name) for f in FACTS]
    raw = [(t, oltp[t].select(T.source_date_columns(t))) for t, _ in sources]
    facts = [star[n] for _, n in sources]
    for today in (SNAPSHOT_DAY, dt.date(2022, 1, 1)):
        assert T.dim_date_range_from_sources(raw, today) == T.dim_date_range(facts, today)
    early = rows(oltp["sales_order"], "sales_order_id", 2).with_columns(
        agreed_payment_date=pl.lit("2021-06-30")
    )
    assert T.dim_date_range_from_sources([("sales_order", early)], SNAPSHOT_DAY) == T.dim_date_range(
        [T.fact_sales_order(early)], SNAPSHOT_DAY
    )
    assert T.source_date_columns("payment") == ["created_at", "last_updated", "payment_date"]


def test_dim_date_covers_every_fact_date(star):
    calendar = star["dim_date"]
    assert calendar.height == (dt.date(2025, 11, 15) - dt.date(2022, 11, 1)).days + 1
    for name in FACT_NAMES:
        spec = WAREHOUSE_TABLES[name]
        for column in [c.name for c in spec.columns if c.references == "dim_date.date_id"]:
            missing = star[name].join(calendar, left_on=column, right_on="date_id", how="anti")
            assert missing.is_empty(), f"{name}.{column}"


# --- whole export --------------------------------------------------------------------------------

EXPECTED_COUNTS = {
    "dim_design": 473,
    "dim_staff": 20,
    "dim_location": 30,
    "dim_counterparty": 20,
    "dim_currency": 3,
    "dim_payment_type": 4,
    "dim_transaction": 15_836,
    "fact_sales_order": 11_187,
    "fact_purchase_order": 4_649,
    "fact_payment": 15_836,
}


@pytest.mark.parametrize("name", list(EXPECTED_COUNTS))
def test_whole_export_counts_and_schema(star, name):
    out = star[name]
    assert out.height == EXPECTED_COUNTS[name]
    assert out.schema == warehouse_schema(name)
    validate_frame(WAREHOUSE_TABLES[name], out)


def test_empty_inputs_give_empty_outputs_with_the_warehouse_schema():
    empty = {t: spec.empty_frame() for t, spec in SOURCE_TABLES.items()}
    outputs = {
        table.name: table.transform(*(empty[t] for t in table.sources)) for table in [*DIMENSIONS, *FACTS]
    }
    for name, out in outputs.items():
        assert out.is_empty() and out.schema == warehouse_schema(name), name


def test_the_star_assets_build_every_warehouse_table_from_its_source_tables():
    assert sorted([*(t.name for t in DIMENSIONS), "dim_date", *FACT_NAMES]) == sorted(WAREHOUSE_TABLES)
    for fact in FACTS:
        assert fact.sources == (WAREHOUSE_TABLES[fact.name].source_table,), fact.name


def test_dim_transaction_null_counts(star):
    assert star["dim_transaction"]["sales_order_id"].null_count() == 4_649
    assert star["dim_transaction"]["purchase_order_id"].null_count() == 11_187


# --- the other team's warehouse as independent evidence -------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "dim_staff",
        "dim_location",
        "dim_design",
        "dim_counterparty",
        "dim_payment_type",
        "dim_transaction",
        "fact_sales_order",
        "fact_purchase_order",
        "fact_payment",
    ],
)
def test_matches_the_other_teams_warehouse(reference_dir, star, name):
    spec = WAREHOUSE_TABLES[name]
    # the columns of the reference ERD (ours add which captured version a fact row is)
    columns = [c for c in spec.insert_columns if c not in ("version_hash", "captured_at")]
    key = [c for c in spec.natural_key if c in columns] if spec.is_fact else [spec.primary_key]
    expected = theirs(reference_dir, name).select(columns).sort(key)
    assert_frame_equal(star[name].select(columns), expected)


def test_dim_currency_codes_match_the_other_team(reference_dir, star):
    # Their names ("Great British Pound") follow another convention; codes and ids must agree.
    expected = (
        theirs(reference_dir, "dim_currency").select("currency_id", "currency_code").sort("currency_id")
    )
    assert_frame_equal(star["dim_currency"].select("currency_id", "currency_code"), expected)


def test_dim_date_matches_the_other_team_after_shifting_weekdays(reference_dir):
    expected = theirs(reference_dir, "dim_date").with_columns(day_of_week=pl.col("day_of_week") + 1)
    assert_frame_equal(T.dim_date(dt.date(2020, 1, 1), dt.date(2025, 12, 31)), expected.sort("date_id"))
