"""The code location: `dagster dev` (via [tool.dagster] / workspace.yaml) loads `defs`."""

from __future__ import annotations

import dagster as dg

from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources

defs = dg.Definitions(
    assets=[*raw_assets],
    resources=build_resources(),
)
