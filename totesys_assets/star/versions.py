"""Versions of source rows as the star transforms see them: the lake's capture columns, the
newest version of each row, and the common finish of every output (insert columns, key order,
validation)."""

from __future__ import annotations

import polars as pl

from totesys_assets.resources.lake import CAPTURED_AT, DELETED, LEGACY_CAPTURED_AT, ROW_HASH
from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES
from totesys_assets.star.validation import (
    TransformError,
    conform_source,
    describe_row,
    same_key_as_next,
    validate_frame,
)

LAST_UPDATED = "last_updated"
VERSION_HASH = "version_hash"
ISO_DATE_FORMAT = "%Y-%m-%d"
# Polars' parser also accepts "2024-1-2" and "+2024-01-02"; the source contract is exactly this.
ISO_DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


def latest_versions(frame: pl.DataFrame, table_name: str) -> pl.DataFrame:
    """The newest version of each source row, sorted by primary key: by capture order (the
    source's state at the last capture, whatever its last_updated says), then by `last_updated`;
    tombstones are not versions, so a row deleted at the source keeps its last version here
    (dimensions keep what facts reference).

    Versions sharing both are resolved as in `sorted_versions`, so the result does not depend on
    the order in which the lake returned the rows.
    """
    spec = SOURCE_TABLES[table_name]
    pk = spec.primary_key
    live = with_capture(frame, table_name).filter(~pl.col(DELETED))
    return (
        sorted_versions(live, [pk, CAPTURED_AT, LAST_UPDATED])
        .filter(last_of_run([pk]))
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


def sorted_versions(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Sorted by `key`. Rows sharing it (exact duplicates, or a conflict) are then ordered by their
    remaining columns, so "the last of them" is the same whatever the input order. The full sort
    only runs when such rows exist, which in a healthy lake they do not."""
    ordered = frame.sort(key)
    if ordered.select(last_of_run(key).not_().any()).item():
        rest = [c for c in frame.columns if c not in key]
        ordered = frame.sort([*key, *rest], nulls_last=True)
    return ordered


def last_of_run(key: list[str]) -> pl.Expr:
    """True on the last row of each run of equal `key` values in a frame sorted by `key`.

    A linear scan: on sorted data this replaces a hash-based duplicate search.
    """
    return same_key_as_next(key).not_()


def finish(name: str, frame: pl.DataFrame, *, sorted_by_key: bool = False) -> pl.DataFrame:
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


def join_required(
    target: str, left: pl.DataFrame, left_table: str, right: pl.DataFrame, left_on: str, right_on: str
) -> pl.DataFrame:
    """Inner join that refuses to drop a row silently: a missing parent is an error naming it."""
    orphans = left.join(right, left_on=left_on, right_on=right_on, how="anti", nulls_equal=False)
    if orphans.height:
        right_table = right_on.removesuffix("_id")
        where = describe_row(orphans, pl.lit(True), [SOURCE_TABLES[left_table].primary_key, left_on])
        raise TransformError(f"{target}: {left_table}.{left_on} refers to a missing {right_table} ({where})")
    return left.join(right, left_on=left_on, right_on=right_on, how="inner", validate="m:1")
