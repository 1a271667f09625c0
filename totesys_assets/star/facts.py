"""The fact transforms: one row per version of a source row, with the versions that break a rule
set aside (`split_fact`) instead of failing the day, and the tombstones of deleted source rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from totesys_assets.resources.lake import CAPTURED_AT, DELETED, ROW_HASH
from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES, Kind
from totesys_assets.star.validation import TransformError, describe_row
from totesys_assets.star.versions import (
    ISO_DATE_FORMAT,
    ISO_DATE_PATTERN,
    LAST_UPDATED,
    VERSION_HASH,
    finish,
    last_of_run,
    with_capture,
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
        return rejected_version_count(self.rejected)


def rejected_version_count(rejected: pl.DataFrame) -> int:
    """How many source versions a frame of rejected values (`REJECTED_SCHEMA`) names."""
    return rejected.select("source_id", "last_updated").n_unique() if rejected.height else 0


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
        .filter(last_of_run(version))
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
    return FactSplit(finish(name, split.rename(renames), sorted_by_key=True), rejected)


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
