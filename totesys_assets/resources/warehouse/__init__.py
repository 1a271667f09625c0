"""The warehouse: PostgreSQL holding the three star schemas, behind `WarehouseResource`.

`resource` is the thin resource; `staged` and `first_load` are the two load strategies, `frames`
checks and encodes a frame, `statements` and `schema` render the SQL, `errors` names what failed.
"""

from totesys_assets.resources.warehouse.errors import (
    WarehouseAccessError,
    WarehouseConnectionError,
    WarehouseError,
    WarehouseLoadError,
    WarehouseSchemaError,
)
from totesys_assets.resources.warehouse.frames import prepare_frame
from totesys_assets.resources.warehouse.resource import WarehouseResource
from totesys_assets.resources.warehouse.result import LoadResult
from totesys_assets.resources.warehouse.schema import (
    CURRENT_VIEWS,
    DELETIONS_SCHEMA,
    DELETIONS_TABLE,
    OPEN_REJECTIONS_VIEW,
    QUARANTINE_SCHEMA,
    REJECTED_TABLE,
    current_view_name,
    warehouse_statements,
)

__all__ = [
    "CURRENT_VIEWS",
    "DELETIONS_SCHEMA",
    "DELETIONS_TABLE",
    "OPEN_REJECTIONS_VIEW",
    "QUARANTINE_SCHEMA",
    "REJECTED_TABLE",
    "LoadResult",
    "WarehouseAccessError",
    "WarehouseConnectionError",
    "WarehouseError",
    "WarehouseLoadError",
    "WarehouseResource",
    "WarehouseSchemaError",
    "current_view_name",
    "prepare_frame",
    "warehouse_statements",
]
