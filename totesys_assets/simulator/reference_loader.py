"""Read the real totesys exports (Parquet or JSON) into frames ready to COPY, values untouched.

The exports disagree on representation, not content: Parquet has float money and float order
ids and nanosecond timestamps; JSON has ISO strings with or without a fraction and either a bare
array or `{"<table>": [...]}` (with extra keys such as "address" that are ignored). Everything is
brought to the spec's types; anything that would change a value is an error naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from totesys_assets.simulator.window_rows import money_text
from totesys_assets.specs import ENUMS, SOURCE_TABLE_NAMES, SOURCE_TABLES, TIMESTAMP_DTYPE, Column, Kind

ISO_FORMAT = "%Y-%m-%dT%H:%M:%S%.f"  # the fraction is optional: ".000" is dropped in JSON exports


class ReferenceDataError(ValueError):
    """An export value that cannot be stored as it is (names file, column and value)."""


def read_export(folder: Path | str) -> dict[str, pl.DataFrame]:
    """Every `<table>.parquet` / `<table>.json` in `folder`, conformed to the table specs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReferenceDataError(f"{folder} is not a folder of totesys exports")
    frames: dict[str, pl.DataFrame] = {}
    for table in SOURCE_TABLE_NAMES:
        parquet, js = folder / f"{table}.parquet", folder / f"{table}.json"
        if parquet.exists():
            frames[table] = conform(table, pl.read_parquet(parquet), parquet.name)
        elif js.exists():
            frames[table] = conform(table, _read_json(js, table), js.name)
    if not frames:
        raise ReferenceDataError(f"no <table>.parquet or <table>.json files in {folder}")
    return frames


def _read_json(path: Path, table: str) -> pl.DataFrame:
    data = json.loads(path.read_bytes())
    if isinstance(data, dict):
        if table not in data:
            raise ReferenceDataError(f"{path.name}: no key {table!r} (keys: {sorted(data)})")
        data = data[table]
    if not isinstance(data, list):
        raise ReferenceDataError(f"{path.name}: expected a list of rows, got {type(data).__name__}")
    if not data:
        return pl.DataFrame(schema={c: pl.String for c in SOURCE_TABLES[table].column_names})
    return pl.from_dicts(data, infer_schema_length=None)


def _bad(source: str, col: Column, values: pl.Series, why: str) -> ReferenceDataError:
    sample = values.head(3).to_list()
    return ReferenceDataError(f"{source}: column {col.name!r} has values that {why}: {sample}")


def _integers(s: pl.Series, col: Column, source: str) -> pl.Series:
    if s.dtype.is_float():
        fractional = s.filter(s.is_not_null() & (s != s.round(0)))
        if fractional.len():
            raise _bad(source, col, fractional, "are not whole numbers")
    out = s.cast(pl.Int64, strict=False)
    lost = s.filter(out.is_null() & s.is_not_null())
    if lost.len():
        raise _bad(source, col, lost, "are not integers")
    return out


def _money(s: pl.Series, col: Column, source: str) -> pl.Series:
    as_float = s.cast(pl.Float64, strict=False)
    lost = s.filter(as_float.is_null() & s.is_not_null())
    if lost.len():
        raise _bad(source, col, lost, "are not numbers")
    cents = (as_float * 100).round(0)
    inexact = s.filter(((as_float * 100) - cents).abs() > 1e-6)
    if inexact.len():
        raise _bad(source, col, inexact, "have more than 2 decimal places")
    frame = pl.DataFrame({col.name: cents.cast(pl.Int64)})
    return frame.select(money_text(pl.col(col.name))).to_series()


def _timestamps(s: pl.Series, col: Column, source: str) -> pl.Series:
    if isinstance(s.dtype, pl.Datetime):
        if s.dtype.time_zone:
            s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return s.dt.cast_time_unit("ms")
    text = s.cast(pl.String).str.replace(" ", "T", literal=True)
    out = text.str.to_datetime(ISO_FORMAT, time_unit="ms", strict=False)
    lost = s.filter(out.is_null() & s.is_not_null())
    if lost.len():
        raise _bad(source, col, lost, "are not ISO timestamps")
    return out.cast(TIMESTAMP_DTYPE)


def _booleans(s: pl.Series, col: Column, source: str) -> pl.Series:
    if s.dtype == pl.Boolean:
        return s
    text = s.cast(pl.String).str.to_lowercase()
    out = text.replace_strict(
        {"true": True, "t": True, "false": False, "f": False}, default=None, return_dtype=pl.Boolean
    )
    lost = s.filter(out.is_null() & s.is_not_null())
    if lost.len():
        raise _bad(source, col, lost, "are not booleans")
    return out


def _texts(s: pl.Series, col: Column, source: str) -> pl.Series:
    if s.dtype == pl.Date:
        return s.dt.to_string("%Y-%m-%d")
    out = s.cast(pl.String)
    if col.kind is Kind.ENUM:
        assert col.enum_type, f"enum column {col.name} needs enum_type"
        unknown = out.filter(out.is_not_null() & ~out.is_in(ENUMS[col.enum_type]))
        if unknown.len():
            raise _bad(source, col, unknown, f"are not {col.enum_type} labels")
    return out


_CONVERT = {
    Kind.INT: _integers,
    Kind.MONEY: _money,
    Kind.TIMESTAMP: _timestamps,
    Kind.BOOL: _booleans,
}


def conform(table: str, raw: pl.DataFrame, source: str) -> pl.DataFrame:
    """The spec's columns in the spec's order, typed for COPY (money as exact text)."""
    spec = SOURCE_TABLES[table]
    missing = [c for c in spec.column_names if c not in raw.columns]
    if missing:
        raise ReferenceDataError(f"{source}: table {table!r} lacks columns {missing}")
    out = {}
    for col in spec.columns:
        series = _CONVERT.get(col.kind, _texts)(raw[col.name], col, source).alias(col.name)
        if not col.nullable and series.null_count():
            ids = raw.filter(series.is_null())[spec.primary_key].head(3).to_list()
            raise ReferenceDataError(
                f"{source}: column {col.name!r} is NULL in rows {spec.primary_key}={ids}"
            )
        out[col.name] = series
    return pl.DataFrame(out)
