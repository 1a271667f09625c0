"""What one warehouse load did, as the star assets report it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg


@dataclass(frozen=True)
class LoadResult:
    """What one load did. For facts `unchanged` counts versions already loaded (alias `skipped`)."""

    table: str
    is_fact: bool
    rows: int  # distinct rows in the loaded frame
    inserted: int
    updated: int
    unchanged: int
    table_rows: int  # rows in the whole table after the load
    seconds: float
    bulk: bool = False  # foreign keys validated set-based (large fact load)

    @property
    def skipped(self) -> int:
        return self.unchanged

    def metadata(self) -> dict[str, Any]:
        """Dagster metadata for the materialization of the table's asset."""
        out: dict[str, Any] = {
            "dagster/row_count": self.table_rows,
            "rows_loaded": self.rows,
            "rows_inserted": self.inserted,
        }
        if self.is_fact:
            out["versions_skipped"] = self.unchanged
        else:
            out["rows_updated"] = self.updated
            out["rows_unchanged"] = self.unchanged
        out["load_seconds"] = dg.MetadataValue.float(round(self.seconds, 3))
        return out
