"""Rows regrouped through local files: frames arrive with rows of any group (a day, a range of
keys) in any order and leave one group or a few at a time, so only a frame and a group are ever
in memory, whatever the stream's length."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

_GROUP = "__group"


class Regrouped:
    """The frames added, held as files in `folder` by the value of `group` (an expression)."""

    def __init__(self, folder: Path, group: pl.Expr):
        self._folder = folder
        self._group = group
        self._files: dict[Any, list[Path]] = {}
        self._count = itertools.count()

    def add(self, frame: pl.DataFrame, keep: set[Any] | None = None) -> None:
        """Spool a frame's rows, one file per group it holds (only the groups in `keep`, if given)."""
        parts = frame.with_columns(self._group.alias(_GROUP)).partition_by(
            _GROUP, as_dict=True, include_key=False
        )
        for (value,), part in parts.items():
            if keep is not None and value not in keep:
                continue
            path = self._folder / f"{next(self._count):08d}.parquet"  # (in the order added)
            part.write_parquet(path, compression="lz4")
            self._files.setdefault(value, []).append(path)

    def groups(self) -> list[Any]:
        """The groups that hold rows, in order."""
        return sorted(self._files)

    def take(self, groups: Iterable[Any]) -> pl.DataFrame | None:
        """The rows of these groups as one frame (in the order they were added; None when none of
        them holds a row); their files are removed."""
        files = [path for g in groups for path in self._files.pop(g, [])]
        if not files:
            return None
        frame = pl.read_parquet(sorted(files))
        for path in files:
            path.unlink()
        return frame
