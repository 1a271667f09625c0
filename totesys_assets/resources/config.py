"""Resources wired from the configuration contract (DESIGN.md): env vars, else embedded defaults.

A set variable is passed as `dg.EnvVar`, so its value (a URL with a password) is resolved at run
time and never shown in the UI or stored in run config.
"""

import dagster as dg
from dagster_aws.s3 import S3Resource

from totesys_assets.resources.lake import LakeResource, RawLakeIOManager
from totesys_assets.resources.source import TotesysSource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.settings import (
    CONNECTION_SETTINGS,
    ENV_LAKE_URL,
    ENV_SOURCE_URL,
    ENV_WAREHOUSE_URL,
    env_or_none,
    require_demo_allowed,
)


def _env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if env_or_none(name) else None


def uses_embedded_source() -> bool:
    return env_or_none(ENV_SOURCE_URL) is None


def build_resources() -> dict[str, object]:
    """The resources; in a deployment a missing URL fails here, when the code location loads."""
    for name in CONNECTION_SETTINGS:
        if env_or_none(name) is None:
            require_demo_allowed(name)
    lake = LakeResource(url=_env(ENV_LAKE_URL), s3=S3Resource())
    return {
        "source": TotesysSource(url=_env(ENV_SOURCE_URL)),
        "warehouse": WarehouseResource(url=_env(ENV_WAREHOUSE_URL)),
        "lake": lake,
        "raw_io_manager": RawLakeIOManager(lake=lake),
    }
