"""The seed-style baseline: how the bootcamp projects this one replaces moved the same data.

* extract: pg8000 `SELECT * FROM <table>` + `fetchall()` into a pandas DataFrame, written as CSV to
  the lake (one object per table, as their ingestion Lambdas did);
* dimensions / facts: the CSVs read back with pandas, remodelled with pandas (merges, `to_datetime`,
  `.dt.date` / `.dt.time`), the processed table written as Parquet, then loaded with pg8000 one
  `INSERT` per row (one commit per table) into a warehouse with the same DDL as ours.

Needs the `bench` extra (pandas, pg8000). It is run at a small scale (×1 by default) and its per-row
rate is extrapolated to larger scales; `run.py` says so in its output. It connects over the same
unix socket as the pipeline (the original projects went over TCP to RDS, which is slower still).
"""

from __future__ import annotations

import io
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd
import pg8000.dbapi

from totesys_assets.specs import CURRENCY_NAMES, SOURCE_TABLE_NAMES, WAREHOUSE_TABLES

DIM_DATE_EARLIEST = date(2022, 11, 1)


def pg8000_connect(url: str) -> pg8000.dbapi.Connection:
    """A pg8000 connection from a postgresql:// URL (TCP, or a unix socket given as ?host=/dir)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    host = query.get("host") or parts.hostname
    port = parts.port or int(query.get("port", 5432))
    kwargs: dict[str, Any] = {
        "user": unquote(parts.username or query.get("user", "postgres")),
        "password": unquote(parts.password) if parts.password else query.get("password"),
        "database": parts.path.lstrip("/") or "postgres",
    }
    if host and host.startswith("/"):
        kwargs["unix_sock"] = f"{host}/.s.PGSQL.{port}"
    else:
        kwargs["host"], kwargs["port"] = host or "localhost", port
    return pg8000.dbapi.connect(**kwargs)


class Lake:
    """Where the baseline writes: a local folder or an S3 bucket/prefix (boto3 client)."""

    def __init__(self, root: Path | None = None, s3_client: Any = None, bucket: str = "", prefix: str = ""):
        self.root, self.client, self.bucket, self.prefix = root, s3_client, bucket, prefix.strip("/")

    def put(self, key: str, data: bytes) -> None:
        if self.client is not None:
            full = f"{self.prefix}/{key}" if self.prefix else key
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
            return
        assert self.root is not None
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, key: str) -> bytes:
        if self.client is not None:
            full = f"{self.prefix}/{key}" if self.prefix else key
            return self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
        assert self.root is not None
        return (self.root / key).read_bytes()


# --- extract --------------------------------------------------------------------------------------


def extract(source_url: str, lake: Lake, stamp: str) -> dict[str, int]:
    """Every table: fetchall() -> DataFrame -> CSV in the lake. Returns rows per table."""
    rows = {}
    conn = pg8000_connect(source_url)
    try:
        cur = conn.cursor()
        for table in SOURCE_TABLE_NAMES:
            cur.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - fixed table names
            records = cur.fetchall()
            columns = [d[0] for d in cur.description]
            frame = pd.DataFrame(records, columns=columns)
            lake.put(f"baseline/raw/{table}/{stamp}.csv", frame.to_csv(index=False).encode())
            rows[table] = len(frame)
    finally:
        conn.close()
    return rows


def read_raw(lake: Lake, table: str, stamp: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(lake.get(f"baseline/raw/{table}/{stamp}.csv")))


# --- transforms (pandas, as the projects wrote them) ---------------------------------------------


def _split_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for col, prefix in (("created_at", "created"), ("last_updated", "last_updated")):
        ts = pd.to_datetime(out[col], format="ISO8601")
        out[f"{prefix}_date"] = ts.dt.date
        out[f"{prefix}_time"] = ts.dt.time
    return out


def _text_dates(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = frame.copy()
    for col in columns:
        out[col] = pd.to_datetime(out[col], format="%Y-%m-%d").dt.date
    return out


def dimension_frames(lake: Lake, stamp: str) -> dict[str, pd.DataFrame]:
    raw = {t: read_raw(lake, t, stamp) for t in SOURCE_TABLE_NAMES}
    staff = raw["staff"].merge(
        raw["department"][["department_id", "department_name", "location"]], on="department_id"
    )
    address = raw["address"]
    legal = address.rename(
        columns={c: f"counterparty_legal_{c}" for c in address.columns if c != "address_id"}
    ).rename(columns={"counterparty_legal_phone": "counterparty_legal_phone_number"})
    counterparty = raw["counterparty"].merge(legal, left_on="legal_address_id", right_on="address_id")
    currency = raw["currency"].assign(currency_name=raw["currency"]["currency_code"].map(CURRENCY_NAMES))
    dates = []
    for table, cols in (
        ("sales_order", ["agreed_delivery_date", "agreed_payment_date"]),
        ("purchase_order", ["agreed_delivery_date", "agreed_payment_date"]),
        ("payment", ["payment_date"]),
    ):
        for col in cols:
            dates.append(pd.to_datetime(raw[table][col], format="%Y-%m-%d").max())
    end = max([pd.Timestamp(date.today() + timedelta(days=365)), *[d for d in dates if pd.notna(d)]])
    days = pd.DataFrame({"date_id": pd.date_range(DIM_DATE_EARLIEST, end, freq="D")})
    dim_date = pd.DataFrame(
        {
            "date_id": days["date_id"].dt.date,
            "year": days["date_id"].dt.year,
            "month": days["date_id"].dt.month,
            "day": days["date_id"].dt.day,
            "day_of_week": days["date_id"].dt.dayofweek + 1,
            "day_name": days["date_id"].dt.day_name(),
            "month_name": days["date_id"].dt.month_name(),
            "quarter": days["date_id"].dt.quarter,
        }
    )
    transaction = raw["transaction"].copy()
    for col in ("sales_order_id", "purchase_order_id"):
        transaction[col] = transaction[col].astype("Int64")
    frames = {
        "dim_date": dim_date,
        "dim_staff": staff,
        "dim_location": address.rename(columns={"address_id": "location_id"}),
        "dim_design": raw["design"],
        "dim_currency": currency,
        "dim_counterparty": counterparty,
        "dim_payment_type": raw["payment_type"],
        "dim_transaction": transaction,
    }
    return {name: frame[WAREHOUSE_TABLES[name].insert_columns] for name, frame in frames.items()}


def fact_frames(lake: Lake, stamp: str) -> dict[str, pd.DataFrame]:
    sales = _text_dates(
        _split_timestamps(read_raw(lake, "sales_order", stamp)),
        ["agreed_delivery_date", "agreed_payment_date"],
    ).rename(columns={"staff_id": "sales_staff_id"})
    purchases = _text_dates(
        _split_timestamps(read_raw(lake, "purchase_order", stamp)),
        ["agreed_delivery_date", "agreed_payment_date"],
    )
    payments = _text_dates(_split_timestamps(read_raw(lake, "payment", stamp)), ["payment_date"])
    frames = {"fact_sales_order": sales, "fact_purchase_order": purchases, "fact_payment": payments}
    captured = pd.Timestamp.now(tz="UTC").tz_localize(None)
    for frame in frames.values():
        # the warehouse's version columns: a content hash of the source row, and when it was read
        frame["version_hash"] = pd.util.hash_pandas_object(frame, index=False).map("{:016x}".format)
        frame["captured_at"] = captured
    return {name: frame[WAREHOUSE_TABLES[name].insert_columns] for name, frame in frames.items()}


# --- load -----------------------------------------------------------------------------------------


def insert_rows(conn: pg8000.dbapi.Connection, table: str, frame: pd.DataFrame) -> int:
    """One INSERT per row, one commit per table (the projects' loader)."""
    columns = list(frame.columns)
    statement = (
        f'INSERT INTO "{table}" ({", ".join(columns)}) '  # noqa: S608 - names from the specs
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    values = frame.astype(object).where(frame.notna(), None)
    cur = conn.cursor()
    n = 0
    for row in values.itertuples(index=False, name=None):
        cur.execute(statement, row)
        n += 1
    conn.commit()
    return n


def _write_processed(lake: Lake, name: str, frame: pd.DataFrame, stamp: str) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    lake.put(f"baseline/processed/{name}/{stamp}.parquet", buf.getvalue())


def transform_and_load(frames_fn, lake: Lake, warehouse_url: str, stamp: str) -> dict[str, Any]:
    started = time.perf_counter()
    frames = frames_fn(lake, stamp)
    for name, frame in frames.items():
        _write_processed(lake, name, frame, stamp)
    transform_s = time.perf_counter() - started
    started = time.perf_counter()
    conn = pg8000_connect(warehouse_url)
    try:
        inserted = {name: insert_rows(conn, name, frame) for name, frame in frames.items()}
    finally:
        conn.close()
    return {
        "transform_seconds": transform_s,
        "insert_seconds": time.perf_counter() - started,
        "warehouse_rows": inserted,
    }


def run_stage(stage: str, source_url: str, warehouse_url: str, lake: Lake, stamp: str) -> dict[str, Any]:
    """One baseline stage: 'extract', 'dimensions' or 'facts'."""
    if stage == "extract":
        return {"source_rows": extract(source_url, lake, stamp)}
    if stage == "dimensions":
        return transform_and_load(dimension_frames, lake, warehouse_url, stamp)
    if stage == "facts":
        return transform_and_load(fact_frames, lake, warehouse_url, stamp)
    raise ValueError(stage)
