"""The lake's object store: Parquet objects on S3 (or a local folder with the same key layout),
written atomically and, when asked, only over the very object that was read.

S3 access goes through dagster-aws's `S3Resource`, so the standard AWS configuration works against
AWS S3, MinIO or moto alike. Conditional writes are S3's `If-Match` / `If-None-Match: *`; on the
local lake the same compare-and-swap runs under a lock of the folder.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from totesys_assets.resources.errors import AWS_HINT, PERMANENT_S3
from totesys_assets.resources.lake.codec import lake_schema, parquet_to_frame
from totesys_assets.resources.lake.errors import LakeAccessError, LakeConflict, LakeError
from totesys_assets.resources.lake.local import LOCK_NAME, digest, lock_fd, locked, sweep_temp_files
from totesys_assets.settings import ENV_LAKE_URL
from totesys_assets.specs import TableSpec

READ_THREADS = 16
WRITE_THREADS = 4
# Read-merge-write rounds of one raw day before giving up (each lost round means another writer
# stored the day in between; two overlapping runs need two).
WRITE_ATTEMPTS = 10
# Concurrency control of raw day writes (conditional PUT / compare-and-swap). Only the benchmark
# turns it off (`bench/run.py --lake-writes unconditional`), to measure what it costs: without it,
# overlapping runs of one day can lose a version.
CONDITIONAL_WRITES = True


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the tag a conditional write compares: the S3 ETag, or locally a
    digest of the content."""

    data: bytes
    etag: str


_checked_lock = threading.Lock()
_checked_endpoints: set[tuple[str, str]] = set()


class LakeStore(dg.ConfigurableResource):
    """Objects of the lake at `s3://bucket/prefix` or in a local folder (TOTESYS_LAKE_URL)."""

    url: str | None = Field(
        default=None,
        description="s3://bucket/prefix or a local folder (TOTESYS_LAKE_URL); unset = $TOTESYS_HOME/lake.",
    )
    s3: S3Resource
    _client = PrivateAttr(default=None)
    _swept: set = PrivateAttr(default_factory=set)
    _sweep_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # --- location -------------------------------------------------------------------------------
    def resolved_url(self) -> str:
        if self.url:
            return self.url
        from totesys_assets import embedded

        return str(embedded.lake_root())

    @property
    def is_s3(self) -> bool:
        return self.resolved_url().startswith("s3://")

    def _bucket_prefix(self) -> tuple[str, str]:
        rest = self.resolved_url()[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        return bucket, prefix.strip("/")

    def _local_root(self) -> Path:
        url = self.resolved_url()
        return Path(url[len("file://") :] if url.startswith("file://") else url)

    def key(self, *parts: str) -> str:
        """Key relative to the lake root, e.g. raw/sales_order/2024-11-15.parquet."""
        return "/".join(parts)

    def raw_key(self, table: str, day: str) -> str:
        return self.key("raw", table, f"{day}.parquet")

    def uri(self, key: str) -> str:
        if self.is_s3:
            bucket, prefix = self._bucket_prefix()
            return f"s3://{bucket}/{prefix + '/' if prefix else ''}{key}"
        return str(self._local_root() / key)

    # --- object operations ----------------------------------------------------------------------
    def _s3_error(self, action: str, key: str, exc: Exception) -> Exception:
        """An S3 failure naming the object, TOTESYS_LAKE_URL and what to check; no retry if it cannot help."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(exc, LakeError | dg.Failure):
            return exc
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
        message = f"{action} {self.uri(key)} failed: {exc}. The lake is {ENV_LAKE_URL}={self.resolved_url()}; {AWS_HINT}"
        if code in PERMANENT_S3 or isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return LakeAccessError(message)
        return LakeError(message)

    def _s3_client(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _full_key(self, key: str) -> str:
        _, prefix = self._bucket_prefix()
        return f"{prefix}/{key}" if prefix else key

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False) -> None:
        """Write one object atomically: an S3 PUT is all-or-nothing; locally, write then rename.

        Conditional when asked: `if_match` (an etag from `get_object`) writes only over that very
        object, `if_absent` only where no object exists; otherwise `LakeConflict`. On S3 these are
        the `If-Match` / `If-None-Match: *` headers (S3 answers 412, or 409 to a conditional write
        racing another); locally the check and the rename happen under the folder's lock.
        """
        if not CONDITIONAL_WRITES:
            if_match, if_absent = None, False
        if self.is_s3:
            self._put_s3(key, data, if_match, if_absent)
            return
        path = self._local_root() / key
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sweep_once(path.parent)
        while True:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                # Held until the temporary file is renamed or removed: a sweep (`sweep_temp_files`)
                # removes only temporary files nobody holds, i.e. those of a writer that died.
                lock_fd(fd)
                if os.fstat(fd).st_nlink == 0:
                    continue  # swept in the instant between creating and locking it: again
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if if_match is None and not if_absent:
                    os.replace(tmp, path)
                else:
                    with locked(path.parent / LOCK_NAME):
                        current = digest(path.read_bytes()) if path.exists() else None
                        if (if_absent and current is not None) or (
                            if_match is not None and current != if_match
                        ):
                            raise LakeConflict(f"{self.uri(key)} changed since it was read")
                        os.replace(tmp, path)
                return
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            finally:
                os.close(fd)

    def _put_s3(self, key: str, data: bytes, if_match: str | None, if_absent: bool) -> None:
        from botocore.exceptions import ClientError

        bucket, _ = self._bucket_prefix()
        conditions = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"} if if_absent else {}
        if conditions:
            self._check_conditional_writes()
        try:
            self._s3_client().put_object(Bucket=bucket, Key=self._full_key(key), Body=data, **conditions)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            lost = status in (409, 412) or error.get("Code") in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            )
            # If-Match on an object deleted meanwhile: 404
            if conditions and (lost or (if_match and error.get("Code") in ("NoSuchKey", "404"))):
                raise LakeConflict(
                    f"{self.uri(key)} changed since it was read ({error.get('Code')})"
                ) from exc
            raise self._s3_error("writing", key, exc) from exc
        except Exception as exc:
            raise self._s3_error("writing", key, exc) from exc

    def _check_conditional_writes(self) -> None:
        """Once per process and bucket: refuse an S3 endpoint that ignores conditional writes.

        AWS S3 honours If-Match / If-None-Match on PUT (since 2024), as do moto and recent
        MinIO; an endpoint that ignored them would let overlapping runs overwrite each other's
        versions silently. Two PUTs of a marker object with If-None-Match: * tell: the second
        (or, once the marker exists, the first) must be refused.
        """
        bucket, _ = self._bucket_prefix()
        endpoint = self._s3_client().meta.endpoint_url
        with _checked_lock:
            if (endpoint, bucket) in _checked_endpoints:
                return
            from botocore.exceptions import ClientError

            marker = self._full_key("_lake/conditional-writes-check")
            for _ in range(2):
                try:
                    self._s3_client().put_object(Bucket=bucket, Key=marker, Body=b"", IfNoneMatch="*")
                except ClientError as exc:
                    if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                        break
                    raise self._s3_error("checking conditional writes on", "", exc) from exc
            else:
                raise LakeError(
                    f"the S3 endpoint of {self.uri('')} ignores conditional writes (If-None-Match): "
                    "overlapping runs could overwrite each other's versions; use AWS S3 or a store "
                    "that supports conditional PUTs"
                )
            _checked_endpoints.add((endpoint, bucket))

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist (no etag: see `get_object`)."""
        if self.is_s3:
            found = self.get_object(key)
            return None if found is None else found.data
        try:
            return (self._local_root() / key).read_bytes()
        except FileNotFoundError:
            return None

    def get_object(self, key: str) -> StoredObject | None:
        """The object's bytes and etag (for a conditional `put`), or None when it does not exist."""
        if self.is_s3:
            bucket, _ = self._bucket_prefix()
            client = self._s3_client()
            try:
                response = client.get_object(Bucket=bucket, Key=self._full_key(key))
                return StoredObject(response["Body"].read(), response["ETag"])
            except client.exceptions.NoSuchKey:
                return None
            except Exception as exc:
                raise self._s3_error("reading", key, exc) from exc
        path = self._local_root() / key
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return StoredObject(data, digest(data))

    # --- stale temporary files of the local lake ------------------------------------------------
    def _sweep_once(self, folder: Path) -> None:
        """Sweep a folder's stale temporary files on this resource's first write into it."""
        with self._sweep_lock:
            if folder in self._swept:
                return
            self._swept.add(folder)
        sweep_temp_files(folder)

    def list_objects(self, prefix: str) -> dict[str, datetime]:
        """Keys (relative to the lake root) under a prefix, with their last-modified time (UTC)."""
        if self.is_s3:
            bucket, _ = self._bucket_prefix()
            full = self._full_key(prefix)
            strip = len(full) - len(prefix)
            pages = self._s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=full)
            try:
                return {o["Key"][strip:]: o["LastModified"] for p in pages for o in p.get("Contents", [])}
            except Exception as exc:
                raise self._s3_error("listing", prefix, exc) from exc
        root = self._local_root()
        base = root / prefix
        if not base.exists():
            return {}
        return {
            str(p.relative_to(root)): datetime.fromtimestamp(p.stat().st_mtime, UTC)
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    def list_keys(self, prefix: str) -> list[str]:
        """Keys (relative to the lake root) under a prefix, sorted."""
        return sorted(self.list_objects(prefix))

    def get_frames(
        self, keys: Iterable[str], spec: TableSpec, columns: list[str] | None = None
    ) -> dict[str, pl.DataFrame | None]:
        """Fetch and decode many Parquet objects (None where missing) on a few threads: decoding is
        most of a small object's cost and Polars releases the GIL for it."""

        def read(key: str) -> pl.DataFrame | None:
            data = self.get(key)
            return None if data is None else parquet_to_frame(data, spec, columns)

        keys = list(keys)
        if len(keys) <= 1:
            return {k: read(k) for k in keys}
        with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(keys))) as pool:
            return dict(zip(keys, pool.map(read, keys), strict=True))

    def _read_local_together(
        self, keys: list[str], spec: TableSpec, columns: list[str] | None
    ) -> pl.DataFrame | None:
        """Many local objects as one frame, read by one Polars call on its own threads (the thread
        pool of `get_frames` pays Python and decoder set-up per object).

        None unless every object is there with the table's schema: the caller then reads them
        one by one, which skips a missing object and names a bad one.
        """
        root = self._local_root()
        try:
            frame = pl.read_parquet([str(root / key) for key in keys], columns=columns)
        except (OSError, pl.exceptions.PolarsError):
            return None
        schema = lake_schema(spec)
        expected = schema if columns is None else {c: schema[c] for c in columns}
        return frame if frame.schema == pl.Schema(expected) else None

    def put_files(self, files: dict[str, Path]) -> None:
        """Write many local files as objects (key -> path) on a few threads, each atomically."""

        def put(item: tuple[str, Path]) -> None:
            self.put(item[0], item[1].read_bytes())

        with ThreadPoolExecutor(max_workers=max(1, min(WRITE_THREADS, len(files)))) as pool:
            list(pool.map(put, files.items()))
