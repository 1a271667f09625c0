"""Pure Polars transforms from raw lake frames to the 11 warehouse tables (REFERENCE.md rules).

Frame in, frame out, no I/O, no Python loop over rows. Inputs have the lake schema
(`SOURCE_TABLES[t].polars_schema`) and may hold several versions of a source row. Dimensions are
current state (the latest version of each row); facts keep one row per version. Every output has
exactly `WAREHOUSE_TABLES[name].insert_columns`, in order, with the warehouse dtypes, sorted by its
key, and has passed `validate_frame`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl
import polars.selectors as cs

from totesys_assets.resources.lake import CAPTURED_AT, DELETED, LEGACY_CAPTURED_AT, ROW_HASH
from totesys_assets.specs import CURRENCY_NAMES, SOURCE_TABLES, WAREHOUSE_TABLES, Kind
from totesys_assets.star.validation import (
    TransformError,
    conform_source,
    describe_row,
    same_key_as_next,
    validate_frame,
)

__all__ = [
    "TransformError",
    "dim_counterparty",
    "dim_currency",
    "dim_date",
    "dim_date_range",
    "dim_design",
    "dim_location",
    "dim_payment_type",
    "dim_staff",
    "dim_transaction",
    "fact_payment",
    "fact_purchase_order",
    "fact_sales_order",
    "latest_versions",
    "split_fact",
    "validate_frame",
]

LAST_UPDATED = "last_updated"
VERSION_HASH = "version_hash"
ISO_DATE_FORMAT = "%Y-%m-%d"
# Polars' parser also accepts "2024-1-2" and "+2024-01-02"; the source contract is exactly this.
ISO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
DIM_DATE_EARLIEST = date(2022, 11, 1)
DIM_DATE_LOOKAHEAD = timedelta(days=365)


# --- versions ------------------------------------------------------------------------------------


def latest_versions(frame: pl.DataFrame, table_name: str) -> pl.DataFrame:
    """The newest version of each source row, sorted by primary key: by `last_updated`, then by
    capture order (an in-place change keeps last_updated); tombstones are not versions, so a row
    deleted at the source keeps its last version here (dimensions keep what facts reference).

    Versions sharing both are resolved as in `_sorted_versions`, so the result does not depend on
    the order in which the lake returned the rows.
    """
    spec = SOURCE_TABLES[table_name]
    pk = spec.primary_key
    live = with_capture(frame, table_name).filter(~pl.col(DELETED))
    return (
        _sorted_versions(live, [pk, LAST_UPDATED, CAPTURED_AT])
        .filter(_last_of_run([pk]))
        .select(spec.column_names)
    )


def with_capture(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """`conform_source`, keeping the lake's capture columns (row hash, capture time, tombstone);
    a frame without them (not read from the lake) gets the values of a legacy object."""
    base = conform_source(frame, table)
    legacy = {
        ROW_HASH: pl.lit(0, pl.Int64),
        CAPTURED_AT: pl.lit(LEGACY_CAPTURED_AT, pl.Datetime("ms")),
        DELETED: pl.lit(False),
    }
    return base.with_columns(
        (pl.lit(frame[c]).cast(legacy_type) if c in frame.columns else legacy[c]).alias(c)
        for c, legacy_type in ((ROW_HASH, pl.Int64), (CAPTURED_AT, pl.Datetime("ms")), (DELETED, pl.Boolean))
    )


def fact_deletions(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """The tombstones among a fact's raw rows: which source row, its last version's last_updated,
    and when the lake observed it gone (the `*_current` views leave such rows out)."""
    table = WAREHOUSE_TABLES[name].source_table
    assert table is not None, f"{name} has no source table"
    pk = SOURCE_TABLES[table].primary_key
    rows = with_capture(frame, table).filter(pl.col(DELETED))
    return rows.select(
        source_id=pl.col(pk).cast(pl.Int32),
        last_updated=pl.col(LAST_UPDATED),
        observed_at=pl.col(CAPTURED_AT),
    ).unique(maintain_order=True)


def _sorted_versions(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Sorted by `key`. Rows sharing it (exact duplicates, or a conflict) are then ordered by their
    remaining columns, so "the last of them" is the same whatever the input order. The full sort
    only runs when such rows exist, which in a healthy lake they do not."""
    ordered = frame.sort(key)
    if ordered.select(_last_of_run(key).not_().any()).item():
        rest = [c for c in frame.columns if c not in key]
        ordered = frame.sort([*key, *rest], nulls_last=True)
    return ordered


def _last_of_run(key: list[str]) -> pl.Expr:
    """True on the last row of each run of equal `key` values in a frame sorted by `key`.

    A linear scan: on sorted data this replaces a hash-based duplicate search.
    """
    return same_key_as_next(key).not_()


def _finish(name: str, frame: pl.DataFrame, *, sorted_by_key: bool = False) -> pl.DataFrame:
    """Select and cast to the warehouse table's insert columns, sort by key (unless the caller's
    rows already are), validate."""
    spec = WAREHOUSE_TABLES[name]
    schema = spec.polars_schema
    key = list(spec.natural_key) if spec.is_fact else [spec.primary_key]
    out = frame.select(pl.col(c).cast(schema[c]) for c in spec.insert_columns)
    if not sorted_by_key:
        out = out.sort(key)
    validate_frame(spec, out, sorted_by_key=True)
    return out


def _join_required(
    target: str, left: pl.DataFrame, left_table: str, right: pl.DataFrame, left_on: str, right_on: str
) -> pl.DataFrame:
    """Inner join that refuses to drop a row silently: a missing parent is an error naming it."""
    orphans = left.join(right, left_on=left_on, right_on=right_on, how="anti", nulls_equal=False)
    if orphans.height:
        right_table = right_on.removesuffix("_id")
        where = describe_row(orphans, pl.lit(True), [SOURCE_TABLES[left_table].primary_key, left_on])
        raise TransformError(f"{target}: {left_table}.{left_on} refers to a missing {right_table} ({where})")
    return left.join(right, left_on=left_on, right_on=right_on, how="inner", validate="m:1")


# --- dimensions ----------------------------------------------------------------------------------


def dim_staff(staff: pl.DataFrame, department: pl.DataFrame) -> pl.DataFrame:
    """Staff with their department's name and location (the manager is not part of the star)."""
    departments = latest_versions(department, "department").select(
        "department_id", "department_name", "location"
    )
    joined = _join_required(
        "dim_staff", latest_versions(staff, "staff"), "staff", departments, "department_id", "department_id"
    )
    return _finish("dim_staff", joined)


def dim_location(address: pl.DataFrame) -> pl.DataFrame:
    """Every address is a potential delivery location."""
    return _finish("dim_location", latest_versions(address, "address").rename({"address_id": "location_id"}))


def dim_design(design: pl.DataFrame) -> pl.DataFrame:
    return _finish("dim_design", latest_versions(design, "design"))


def dim_currency(currency: pl.DataFrame) -> pl.DataFrame:
    """Currencies named from the fixed ISO 4217 mapping (never looked up at run time)."""
    rows = latest_versions(currency, "currency")
    unknown = ~pl.col("currency_code").is_in(list(CURRENCY_NAMES))
    if rows.select(unknown.any()).item():
        first = rows.filter(unknown).row(0, named=True)
        raise TransformError(
            f"dim_currency.currency_code: unknown currency code {first['currency_code']!r} "
            f"(currency_id={first['currency_id']}); known codes are {', '.join(sorted(CURRENCY_NAMES))} "
            "— add its ISO 4217 name to specs.CURRENCY_NAMES"
        )
    named = rows.with_columns(currency_name=pl.col("currency_code").replace_strict(CURRENCY_NAMES))
    return _finish("dim_currency", named)


# address column -> dim_counterparty column; derived from the source spec, phone is the exception.
_LEGAL_ADDRESS_COLUMNS = {
    c: "counterparty_legal_phone_number" if c == "phone" else f"counterparty_legal_{c}"
    for c in SOURCE_TABLES["address"].column_names
    if c not in ("address_id", "created_at", LAST_UPDATED)
}


def dim_counterparty(counterparty: pl.DataFrame, address: pl.DataFrame) -> pl.DataFrame:
    """Counterparties with their legal address flattened in (contacts are not part of the star)."""
    legal_addresses = latest_versions(address, "address").select(
        "address_id", *(pl.col(src).alias(dst) for src, dst in _LEGAL_ADDRESS_COLUMNS.items())
    )
    joined = _join_required(
        "dim_counterparty",
        latest_versions(counterparty, "counterparty"),
        "counterparty",
        legal_addresses,
        "legal_address_id",
        "address_id",
    )
    return _finish("dim_counterparty", joined)


def dim_payment_type(payment_type: pl.DataFrame) -> pl.DataFrame:
    return _finish("dim_payment_type", latest_versions(payment_type, "payment_type"))


def dim_transaction(transaction: pl.DataFrame) -> pl.DataFrame:
    """Transactions; exactly one of the order ids is set, the other stays NULL."""
    return _finish("dim_transaction", latest_versions(transaction, "transaction"))


def dim_date(start: date, end: date) -> pl.DataFrame:
    """One row per day from `start` to `end` inclusive; ISO weekdays (Monday=1), English names."""
    if start > end:
        raise TransformError(f"dim_date: start {start} is after end {end}")
    day = pl.col("date_id")
    calendar = pl.DataFrame({"date_id": pl.date_range(start, end, "1d", eager=True)}).with_columns(
        year=day.dt.year(),
        month=day.dt.month(),
        day=day.dt.day(),
        day_of_week=day.dt.weekday(),
        day_name=day.dt.strftime("%A"),
        month_name=day.dt.strftime("%B"),
        quarter=(day.dt.month() - 1) // 3 + 1,
    )
    return _finish("dim_date", calendar)


def dim_date_range(fact_frames: Iterable[pl.DataFrame], today: date) -> tuple[date, date]:
    """(start, end) for `dim_date`: every date a fact references, 2022-11-01 on, a year ahead of today.

    Facts reference dim_date by foreign key, so the calendar must cover all their date columns.
    """
    start, end = DIM_DATE_EARLIEST, today + DIM_DATE_LOOKAHEAD
    for frame in fact_frames:
        dates = frame.select(cs.date())
        if dates.width == 0:
            continue
        lows = [d for d in dates.min().row(0) if d is not None]
        highs = [d for d in dates.max().row(0) if d is not None]
        start, end = min([start, *lows]), max([end, *highs])
    return start, end


def source_date_columns(table: str) -> list[str]:
    """The raw columns a fact's dates come from: its timestamps and its YYYY-MM-DD text dates."""
    return [c.name for c in SOURCE_TABLES[table].columns if c.kind in (Kind.TIMESTAMP, Kind.DATE_TEXT)]


def dim_date_range_from_sources(raw: Iterable[tuple[str, pl.DataFrame]], today: date) -> tuple[date, date]:
    """`dim_date_range` of the facts built from these raw frames, without building the facts.

    Reads only the date columns (`source_date_columns`). Covers every date those facts reference:
    a fact keeps a subset of the row versions and takes its dates from exactly these columns.
    A text date that does not parse is skipped here; the fact transform rejects it with its row.
    """
    frames = []
    for table, frame in raw:
        exprs = [
            pl.col(c.name).str.to_date(ISO_DATE_FORMAT, strict=False)
            if c.kind is Kind.DATE_TEXT
            else pl.col(c.name).dt.date()
            for c in SOURCE_TABLES[table].columns
            if c.name in source_date_columns(table)
        ]
        frames.append(frame.select(exprs))
    return dim_date_range(frames, today)


# --- facts ---------------------------------------------------------------------------------------

_FACT_RENAMES: dict[str, dict[str, str]] = {"fact_sales_order": {"staff_id": "sales_staff_id"}}


def _fact(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One fact row per version (id + last_updated) of a source row, timestamps split in two.

    Strict: a version that cannot be loaded is an error naming it (`split_fact` sets such
    versions aside instead)."""
    return _fact_versions(name, frame, reject=False, dimension_keys=None).frame


# The columns of a rejected version (quarantine): which version, which value, and why.
REJECTED_SCHEMA = pl.Schema(
    {
        "source_table": pl.String(),
        "source_id": pl.Int32(),
        "last_updated": pl.Datetime("ms"),
        "column_name": pl.String(),
        "value": pl.String(),
        "reason": pl.String(),
        "source_row": pl.String(),  # the version's columns the fact keeps, as JSON
    }
)


@dataclass(frozen=True)
class FactSplit:
    """A fact's loadable rows, and the source versions set aside (one row per offending value)."""

    frame: pl.DataFrame
    rejected: pl.DataFrame

    @property
    def rejected_versions(self) -> int:
        return self.rejected.select("source_id", "last_updated").n_unique() if self.rejected.height else 0


def split_fact(
    name: str, frame: pl.DataFrame, dimension_keys: Mapping[str, pl.Series] | None = None
) -> FactSplit:
    """The fact's rows for every version that can be loaded, and the versions that cannot.

    A version is set aside (never dropped silently: it is in `rejected`, with the column, the value
    and the reason) when a TEXT date does not parse, a column the fact needs is NULL, or, given
    the dimensions' keys (fact column -> the keys it may hold), a value has no dimension row. The
    other versions load as `_fact` would load them; one bad version does not hold them back.
    """
    return _fact_versions(name, frame, reject=True, dimension_keys=dimension_keys)


def _fact_versions(
    name: str, frame: pl.DataFrame, *, reject: bool, dimension_keys: Mapping[str, pl.Series] | None
) -> FactSplit:
    table = WAREHOUSE_TABLES[name].source_table
    assert table is not None, f"{name} has no source table"
    source = SOURCE_TABLES[table]
    pk = source.primary_key
    renames = _FACT_RENAMES.get(name, {})
    # Only the columns the fact keeps are sorted and carried (payment's account numbers are not).
    kept = set(WAREHOUSE_TABLES[name].insert_columns)
    used = [c for c in source.column_names if c in ("created_at", LAST_UPDATED) or renames.get(c, c) in kept]
    # One row per distinct version (key, last_updated, content hash), the first capture of it;
    # tombstones are not versions (`fact_deletions`).
    rows = with_capture(frame, table).filter(~pl.col(DELETED))
    version = [pk, LAST_UPDATED, VERSION_HASH]
    versions = (
        rows.select(
            *used,
            pl.col(ROW_HASH).cast(pl.String).alias(VERSION_HASH),
            pl.col(CAPTURED_AT).alias("captured_at"),
        )
        .sort([*version, "captured_at"], descending=[False, False, False, True])
        .filter(_last_of_run(version))
    )
    text_dates = [c.name for c in source.columns if c.kind is Kind.DATE_TEXT]
    rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
    if reject:
        versions, rejected = _set_aside_invalid(name, table, versions, text_dates, dimension_keys or {})
    split = _parse_iso_dates(name, table, versions, text_dates).with_columns(
        created_date=pl.col("created_at").dt.date(),
        created_time=pl.col("created_at").dt.time(),
        last_updated_date=pl.col(LAST_UPDATED).dt.date(),
        last_updated_time=pl.col(LAST_UPDATED).dt.time(),
    )
    # Sorted by (id, last_updated, version_hash), hence by the natural key: no re-sort.
    return FactSplit(_finish(name, split.rename(renames), sorted_by_key=True), rejected)


def _source_of(name: str, fact_column: str) -> str:
    """The source column a fact column is made from."""
    if fact_column in ("created_date", "created_time"):
        return "created_at"
    if fact_column in ("last_updated_date", "last_updated_time"):
        return LAST_UPDATED
    inverse = {v: k for k, v in _FACT_RENAMES.get(name, {}).items()}
    return inverse.get(fact_column, fact_column)


def _set_aside_invalid(
    name: str,
    table: str,
    versions: pl.DataFrame,
    text_dates: list[str],
    dimension_keys: Mapping[str, pl.Series],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the valid versions, one rejected row per offending value), by the rules of `split_fact`."""
    spec = WAREHOUSE_TABLES[name]
    pk = SOURCE_TABLES[table].primary_key
    parsed = {c: pl.col(c).str.to_date(ISO_DATE_FORMAT, strict=False) for c in text_dates}
    # (source column, offending rows, why)
    rules: list[tuple[str, pl.Expr, str]] = []
    for c in text_dates:
        bad = pl.col(c).is_not_null() & (parsed[c].is_null() | ~pl.col(c).str.contains(ISO_DATE_PATTERN))
        rules.append((c, bad, f"is not a {ISO_DATE_FORMAT} date"))
    required = {_source_of(name, c) for c in spec.not_null_columns if c in spec.insert_columns}
    for c in sorted(required - {pk, LAST_UPDATED}):
        rules.append((c, pl.col(c).is_null(), f"is NULL, and {name} needs a value"))
    for column in spec.foreign_keys:
        keys = dimension_keys.get(column.name)
        if keys is None:
            continue
        src = _source_of(name, column.name)
        value = (
            parsed[src]
            if src in parsed
            else pl.col(src).dt.date()
            if column.kind is Kind.DATE
            else pl.col(src)
        )
        ref_table = column.references.split(".")[0]  # type: ignore[union-attr]
        rules.append((src, value.is_not_null() & ~value.is_in(keys.implode()), f"has no row in {ref_table}"))
    if not rules:
        return versions, pl.DataFrame(schema=REJECTED_SCHEMA)
    flags = versions.select(rule.alias(f"__bad_{i}") for i, (_, rule, _) in enumerate(rules))
    any_bad = pl.any_horizontal(flags.columns)
    if not flags.select(any_bad.any()).item():
        return versions, pl.DataFrame(schema=REJECTED_SCHEMA)
    marked = pl.concat([versions, flags], how="horizontal")
    row_json = pl.struct(versions.columns).struct.json_encode()
    rejected = pl.concat(
        [
            marked.filter(pl.col(f"__bad_{i}")).select(
                source_table=pl.lit(table),
                source_id=pl.col(pk).cast(pl.Int32),
                last_updated=pl.col(LAST_UPDATED),
                column_name=pl.lit(column),
                value=pl.col(column).cast(pl.String),
                reason=pl.lit(why),
                source_row=row_json,
            )
            for i, (column, _, why) in enumerate(rules)
        ]
    ).cast(dict(REJECTED_SCHEMA))  # type: ignore[arg-type]
    return marked.filter(~any_bad).select(versions.columns), rejected


def _parse_iso_dates(target: str, table: str, rows: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """TEXT `YYYY-MM-DD` columns as Date; anything else is an error, never a silent NULL."""
    parsed = rows.with_columns(pl.col(c).str.to_date(ISO_DATE_FORMAT, strict=False) for c in columns)
    for column in columns:
        text = rows[column]
        bad = text.is_not_null() & (parsed[column].is_null() | ~text.str.contains(ISO_DATE_PATTERN))
        if bad.any():
            value = text.filter(bad)[0]
            where = describe_row(rows, bad, [SOURCE_TABLES[table].primary_key, LAST_UPDATED])
            raise TransformError(
                f"{target}: {table}.{column} value {value!r} is not a {ISO_DATE_FORMAT} date ({where})"
            )
    return parsed


def fact_sales_order(sales_order: pl.DataFrame) -> pl.DataFrame:
    return _fact("fact_sales_order", sales_order)


def fact_purchase_order(purchase_order: pl.DataFrame) -> pl.DataFrame:
    return _fact("fact_purchase_order", purchase_order)


def fact_payment(payment: pl.DataFrame) -> pl.DataFrame:
    """Payments without the two account numbers (not part of the star)."""
    return _fact("fact_payment", payment)
