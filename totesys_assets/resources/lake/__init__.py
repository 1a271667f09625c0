"""The data lake: raw day objects (Parquet, with capture metadata) on S3 or in a local folder.

`LakeResource` is the one way into it; `store` holds the object operations, `codec` the encoding,
`versions` the merge of row versions into days, `fingerprints` what each day captured, and
`io_manager` the raw assets' IO manager.
"""

from totesys_assets.resources.lake.codec import (
    CAPTURED_AT,
    DELETED,
    LEGACY_CAPTURED_AT,
    META_SCHEMA,
    ROW_HASH,
    capture_time,
    frame_to_parquet,
    lake_empty_frame,
    lake_schema,
    parquet_to_frame,
    with_capture_meta,
)
from totesys_assets.resources.lake.errors import LakeAccessError, LakeConflict, LakeError
from totesys_assets.resources.lake.fingerprints import EMPTY_FINGERPRINT, Fingerprint
from totesys_assets.resources.lake.io_manager import RawLakeIOManager
from totesys_assets.resources.lake.resource import LakeResource
from totesys_assets.resources.lake.store import StoredObject
from totesys_assets.resources.lake.versions import (
    RawDay,
    RawDays,
    day_of,
    latest_captured,
    merge_day,
    raw_order,
    split_by_day,
    split_raw_days,
)

__all__ = [
    "CAPTURED_AT",
    "DELETED",
    "EMPTY_FINGERPRINT",
    "LEGACY_CAPTURED_AT",
    "META_SCHEMA",
    "ROW_HASH",
    "Fingerprint",
    "LakeAccessError",
    "LakeConflict",
    "LakeError",
    "LakeResource",
    "RawDay",
    "RawDays",
    "RawLakeIOManager",
    "StoredObject",
    "capture_time",
    "day_of",
    "frame_to_parquet",
    "lake_empty_frame",
    "lake_schema",
    "latest_captured",
    "merge_day",
    "parquet_to_frame",
    "raw_order",
    "split_by_day",
    "split_raw_days",
    "with_capture_meta",
]
