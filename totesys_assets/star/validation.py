"""Frame checks shared by the star transforms.

Bad input must stop a load with a message that names the table, the column, an offending value
and the row it sits in, so that someone can find the row in the source. Every check is one
vectorised pass; the row is only looked up once something is known to be wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from totesys_assets.specs import SOURCE_TABLES, TableSpec


class TransformError(ValueError):
    """Input or output of a star transform breaks the specs or the transformation rules."""


def describe_row(frame: pl.DataFrame, bad: pl.Series | pl.Expr, key: Sequence[str]) -> str:
    """`k1=v1, k2=v2` for the first row flagged by `bad`, plus how many rows are flagged."""
    flagged = frame.filter(bad)
    first = flagged.select(key).row(0, named=True)
    label = ", ".join(f"{name}={value}" for name, value in first.items())
    return f"{label}; {flagged.height} row(s) affected"


def conform_source(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """The frame's columns in spec order; a missing column or a dtype other than the lake's is an error.

    Casting silently would hide a broken lake write (e.g. money as float), so types must match.
    """
    spec = SOURCE_TABLES[table]
    for name, dtype in spec.polars_schema.items():
        if name not in frame.columns:
            raise TransformError(f"{table}: input has no column {name!r}")
        if frame.schema[name] != dtype:
            raise TransformError(
                f"{table}.{name}: input dtype is {frame.schema[name]}, the lake schema says {dtype}"
            )
    return frame.select(spec.column_names)


def same_key_as_next(key: Sequence[str]) -> pl.Expr:
    """True where the next row has the same `key` values (False on the last row and on NULLs)."""
    return pl.all_horizontal(pl.col(c) == pl.col(c).shift(-1) for c in key).fill_null(False)


def validate_frame(spec: TableSpec, frame: pl.DataFrame, *, sorted_by_key: bool = False) -> None:
    """Raise `TransformError` unless `frame` can be loaded into `spec`'s warehouse table.

    Checks the columns and dtypes, NULLs in NOT NULL columns, and duplicate keys: the primary
    key for a dimension, the natural key (id + last_updated) for a fact. `sorted_by_key=True`
    (the transforms' outputs are) finds duplicates by comparing neighbours instead of hashing.
    """
    _check_columns(spec, frame)
    key = list(spec.natural_key) if spec.is_fact else [spec.primary_key]
    _check_not_null(spec, frame, key)
    if sorted_by_key:
        next_same = same_key_as_next(key)
        duplicated = frame.select(next_same | next_same.shift(1).fill_null(False)).to_series()
    else:
        duplicated = frame.select(pl.struct(key).is_duplicated()).to_series()
    if duplicated.any():
        kind = "natural key" if spec.is_fact else "primary key"
        raise TransformError(f"{spec.name}: duplicate {kind} ({describe_row(frame, duplicated, key)})")


def _check_columns(spec: TableSpec, frame: pl.DataFrame) -> None:
    expected = spec.polars_schema
    for name in spec.insert_columns:
        if name not in frame.columns:
            raise TransformError(f"{spec.name}: frame has no column {name!r}")
    for name, dtype in frame.schema.items():
        if name not in expected:
            raise TransformError(f"{spec.name}: unexpected column {name!r}")
        if dtype != expected[name]:
            raise TransformError(
                f"{spec.name}.{name}: dtype is {dtype}, the warehouse needs {expected[name]}"
            )


def _check_not_null(spec: TableSpec, frame: pl.DataFrame, key: list[str]) -> None:
    required = [name for name in spec.not_null_columns if name in frame.columns]
    null_counts = frame.select(pl.col(required).null_count()).row(0, named=True)
    for name, count in null_counts.items():
        if count:
            where = describe_row(frame.with_row_index("row"), pl.col(name).is_null(), ["row", *key])
            raise TransformError(f"{spec.name}.{name}: NULL in a NOT NULL column ({where})")
