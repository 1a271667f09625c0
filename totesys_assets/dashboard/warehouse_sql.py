"""The SQL the dashboard runs: static text derived from the star schema, one value (an order id)
bound as $1."""

from __future__ import annotations

from dataclasses import dataclass

SALES, PURCHASES, PAYMENTS = "sales", "purchases", "payments"
KINDS = (SALES, PURCHASES, PAYMENTS)


@dataclass(frozen=True)
class FactSource:
    """How one fact is read: its current view, its history table and the columns the pages use."""

    kind: str
    table: str
    view: str
    natural_id: str
    record_id: str
    date_column: str  # the business date the date filter and the months use
    snapshot_sql: str  # the current state (the *_current view)
    tail_sql: str  # the ids of the versions appended after record id $1
    rows_sql: str  # the current rows of the ids in $1 (comma-separated), from the view
    max_sql: str  # the highest record id (the primary key's index)
    count_sql: str  # versions (rows), read only when something was written
    load_time_sql: str  # commit time of the newest record (track_commit_timestamp = on only)


def _fact_source(
    kind: str, table: str, natural_id: str, record_id: str, date_column: str, columns: str
) -> FactSource:
    view = f"{table}_current"
    # The SQL is assembled from this module's constant identifiers only (noqa/nosec below).
    return FactSource(
        kind=kind,
        table=table,
        view=view,
        natural_id=natural_id,
        record_id=record_id,
        date_column=date_column,
        snapshot_sql=f"SELECT {columns} FROM {view}",  # noqa: S608  # nosec B608
        tail_sql=f"SELECT {natural_id} AS id FROM {table} WHERE {record_id} > $1",  # noqa: S608  # nosec B608
        rows_sql=(
            f"SELECT {columns} FROM {view} "  # noqa: S608  # nosec B608
            f"WHERE {natural_id} = ANY(string_to_array($1, ',')::integer[])"
        ),
        max_sql=f"SELECT max({record_id}) AS max_record_id FROM {table}",  # noqa: S608  # nosec B608
        count_sql=f"SELECT count(*) AS versions FROM {table}",  # noqa: S608  # nosec B608
        load_time_sql=(
            f"SELECT pg_xact_commit_timestamp(xmin) AS loaded_at FROM {table} "  # noqa: S608  # nosec B608
            f"ORDER BY {record_id} DESC LIMIT 1"
        ),
    )


# Money travels as exact integer cents (numeric * 100 -> bigint); quantities as bigint so sums
# over millions of orders cannot overflow; `last_updated` is the version time as one timestamp.
FACT_SOURCES: dict[str, FactSource] = {
    SALES: _fact_source(
        SALES,
        "fact_sales_order",
        "sales_order_id",
        "sales_record_id",
        "created_date",
        "sales_record_id AS record_id, sales_order_id, created_date, "
        "date_trunc('month', created_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, sales_staff_id AS staff_id, "
        "counterparty_id, currency_id, design_id, agreed_delivery_location_id AS location_id, "
        "units_sold::bigint AS units, (units_sold * unit_price * 100)::bigint AS amount_cents",
    ),
    PURCHASES: _fact_source(
        PURCHASES,
        "fact_purchase_order",
        "purchase_order_id",
        "purchase_record_id",
        "created_date",
        "purchase_record_id AS record_id, purchase_order_id, created_date, "
        "date_trunc('month', created_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, staff_id, counterparty_id, currency_id, "
        "agreed_delivery_location_id AS location_id, item_quantity::bigint AS units, "
        "(item_quantity * item_unit_price * 100)::bigint AS amount_cents",
    ),
    PAYMENTS: _fact_source(
        PAYMENTS,
        "fact_payment",
        "payment_id",
        "payment_record_id",
        "payment_date",
        "payment_record_id AS record_id, payment_id, payment_date, "
        "date_trunc('month', payment_date)::date AS month, "
        "last_updated_date + last_updated_time AS last_updated, transaction_id, counterparty_id, "
        "currency_id, payment_type_id, paid, (payment_amount * 100)::bigint AS amount_cents",
    ),
}

DIMENSION_SQL: dict[str, str] = {
    "currency": "SELECT currency_id, currency_code, currency_name FROM dim_currency",
    "counterparty": (
        "SELECT counterparty_id, counterparty_legal_name, counterparty_legal_country FROM dim_counterparty"
    ),
    "design": "SELECT design_id, design_name FROM dim_design",
    "location": "SELECT location_id, city, country FROM dim_location",
    "staff": (
        "SELECT staff_id, first_name || ' ' || last_name AS staff_name, department_name FROM dim_staff"
    ),
    "payment_type": "SELECT payment_type_id, payment_type_name FROM dim_payment_type",
}

# Rows written to each fact since the statistics were reset (PostgreSQL's cumulative statistics,
# flushed by a writing backend within about a second of its commit). Read before the snapshot.
WRITES_SQL = (
    "SELECT c.relname::text AS table_name, s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS writes, "
    "current_setting('track_counts') = 'on' AS tracked FROM pg_class c "
    "JOIN pg_stat_user_tables s ON s.relid = c.oid "
    "WHERE c.oid IN (to_regclass('fact_sales_order'), to_regclass('fact_purchase_order'), to_regclass('fact_payment'))"
)
COMMIT_TIMESTAMPS_SQL = "SELECT current_setting('track_commit_timestamp') = 'on' AS enabled"

# The History page: every version of one order or payment (bound $1), with the dimension names.
HISTORY_SQL: dict[str, str] = {
    SALES: (
        "SELECT f.sales_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.units_sold, f.unit_price::text AS unit_price, c.currency_code, "
        "d.design_name, s.first_name || ' ' || s.last_name AS sales_staff, cp.counterparty_legal_name "
        "AS counterparty, f.agreed_delivery_date, f.agreed_payment_date, l.city || ', ' || l.country "
        "AS delivery_location "
        "FROM fact_sales_order f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_design d ON d.design_id = f.design_id "
        "LEFT JOIN dim_staff s ON s.staff_id = f.sales_staff_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "LEFT JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "WHERE f.sales_order_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.sales_record_id"
    ),
    PURCHASES: (
        "SELECT f.purchase_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.item_code, f.item_quantity, f.item_unit_price::text AS item_unit_price, "
        "c.currency_code, s.first_name || ' ' || s.last_name AS staff, cp.counterparty_legal_name "
        "AS supplier, f.agreed_delivery_date, f.agreed_payment_date, l.city || ', ' || l.country "
        "AS delivery_location "
        "FROM fact_purchase_order f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_staff s ON s.staff_id = f.staff_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "LEFT JOIN dim_location l ON l.location_id = f.agreed_delivery_location_id "
        "WHERE f.purchase_order_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.purchase_record_id"
    ),
    PAYMENTS: (
        "SELECT f.payment_record_id AS record_id, f.last_updated_date + f.last_updated_time AS last_updated, "
        "f.created_date + f.created_time AS created, f.payment_amount::text AS payment_amount, c.currency_code, "
        "t.payment_type_name AS payment_type, f.paid, f.payment_date, f.transaction_id, "
        "cp.counterparty_legal_name AS counterparty "
        "FROM fact_payment f "
        "LEFT JOIN dim_currency c ON c.currency_id = f.currency_id "
        "LEFT JOIN dim_payment_type t ON t.payment_type_id = f.payment_type_id "
        "LEFT JOIN dim_counterparty cp ON cp.counterparty_id = f.counterparty_id "
        "WHERE f.payment_id = $1 "
        "ORDER BY f.last_updated_date, f.last_updated_time, f.payment_record_id"
    ),
}
HISTORY_MONEY = ("unit_price", "item_unit_price", "payment_amount")
HISTORY_MEASURE = {SALES: "units_sold", PURCHASES: "item_quantity", PAYMENTS: "payment_amount"}
HISTORY_ID_LABEL = {SALES: "sales order id", PURCHASES: "purchase order id", PAYMENTS: "payment id"}

# Orders (or payments) with more than one version among the newest `$1` versions loaded: the pk
# index finds the newest versions, the version key each id's other versions.
RECENT_CHANGES_SQL: dict[str, str] = {
    kind: (
        f"WITH recent AS (SELECT DISTINCT {s.natural_id} AS id FROM (SELECT {s.natural_id} FROM {s.table} "  # noqa: S608  # nosec B608
        f"ORDER BY {s.record_id} DESC LIMIT $1) newest) "
        f"SELECT f.{s.natural_id} AS id, count(*) AS versions, "
        f"max(f.last_updated_date + f.last_updated_time) AS last_updated "
        f"FROM {s.table} f JOIN recent ON recent.id = f.{s.natural_id} "
        f"GROUP BY f.{s.natural_id} HAVING count(*) > 1 ORDER BY last_updated DESC, id DESC LIMIT 25"
    )
    for kind, s in FACT_SOURCES.items()
}
RECENT_VERSIONS_SCANNED = 2000
