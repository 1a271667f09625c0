"""The data lake: Parquet objects on S3 (or a local folder with the same key layout).

`LakeResource` is the storage (keys, atomic writes, parallel reads); `RawLakeIOManager` is the
Dagster IO manager of the raw assets on top of it. S3 access goes through dagster-aws's
`S3Resource`, so the standard AWS configuration (credentials chain, region,
`AWS_ENDPOINT_URL_S3`) works against AWS S3, MinIO or moto alike.

Writers of the same raw day cannot clobber each other: a day is read with its ETag, merged, and
written back only if it is still the object that was read (S3 `If-Match`, or `If-None-Match: *`
for a day that did not exist; on the local lake the same compare-and-swap under a lock of the
table's folder). A writer that lost re-reads the day, merges again and retries, so every version
of every writer ends up in the day (`write_raw_day`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from totesys_assets.resources.errors import AWS_HINT, PERMANENT_S3, ConfigurationFailure
from totesys_assets.settings import ENV_LAKE_URL
from totesys_assets.specs import LAST_UPDATED, SOURCE_TABLES, TableSpec

READ_THREADS = 16
WRITE_THREADS = 4
# Read-merge-write rounds of one raw day before giving up (each lost round means another writer
# stored the day in between; two overlapping runs need two).
WRITE_ATTEMPTS = 10
# Concurrency control of raw day writes (conditional PUT / compare-and-swap). Only the benchmark
# turns it off (`bench/run.py --lake-writes unconditional`), to measure what it costs: without it,
# overlapping runs of one day can lose a version.
CONDITIONAL_WRITES = True
# The lock file of a local lake folder (hidden: listings skip dot files).
LOCK_NAME = ".lock"

# Capture metadata stored beside the source columns of every raw row version (README, "How the
# lake captures changes"): the source's hash of the row's content (a version is primary key +
# last_updated + this hash), when the lake first captured it, and whether it is a tombstone (the
# row was observed gone from the source at `_captured_at`; its other columns are its last version).
ROW_HASH, CAPTURED_AT, DELETED = "_row_hash", "_captured_at", "_deleted"
META_SCHEMA = pl.Schema({ROW_HASH: pl.Int64(), CAPTURED_AT: pl.Datetime("ms"), DELETED: pl.Boolean()})
# Objects written before the capture metadata existed read as captured at the epoch, not deleted,
# with row hash 0 (the warehouse migration gives their fact rows the same values).
LEGACY_CAPTURED_AT = datetime(1970, 1, 1)
# Per-day fingerprints of what each raw table's days captured (`record_fingerprints`).
FINGERPRINTS_PREFIX = "fingerprints"
FINGERPRINT_SCHEMA = pl.Schema(
    {
        "day": pl.String(),
        "rows": pl.Int64(),
        "hash": pl.String(),
        "data_version": pl.String(),
        "recorded_at": pl.Datetime("ms"),
    }
)


def lake_schema(spec: TableSpec) -> pl.Schema:
    """The schema of a raw day object: the table's columns, then the capture metadata."""
    return pl.Schema({**spec.polars_schema, **META_SCHEMA})


def lake_empty_frame(spec: TableSpec) -> pl.DataFrame:
    return pl.DataFrame(schema=lake_schema(spec))


def with_capture_meta(spec: TableSpec, frame: pl.DataFrame, captured_at: datetime) -> pl.DataFrame:
    """An extract (or any frame of the table's rows) with the capture metadata of a new capture.

    A frame without the source's row hash (not from `TotesysSource.extract`) is hashed here.
    """
    exprs = []
    if ROW_HASH not in frame.columns:
        hashed = frame.select(spec.column_names).hash_rows(seed=0).reinterpret(signed=True)
        exprs.append(pl.lit(hashed).alias(ROW_HASH))
    if CAPTURED_AT not in frame.columns:
        exprs.append(pl.lit(captured_at, dtype=META_SCHEMA[CAPTURED_AT]).alias(CAPTURED_AT))
    if DELETED not in frame.columns:
        exprs.append(pl.lit(False).alias(DELETED))
    out = frame.with_columns(exprs) if exprs else frame
    return out.select(pl.col(c).cast(t) for c, t in lake_schema(spec).items())


def _legacy_meta(frame: pl.DataFrame, columns: list[str] | None) -> pl.DataFrame:
    """A frame read from an object without capture metadata, with the legacy values added."""
    legacy = {
        ROW_HASH: pl.lit(0, pl.Int64),
        CAPTURED_AT: pl.lit(LEGACY_CAPTURED_AT, pl.Datetime("ms")),
        DELETED: pl.lit(False),
    }
    wanted = [c for c in META_SCHEMA if columns is None or c in columns]
    out = frame.with_columns(legacy[c].alias(c) for c in wanted if c not in frame.columns)
    return out if columns is None else out.select(columns)


try:
    import fcntl
except ImportError:  # Windows: no advisory locks; see _lock_file
    fcntl = None  # type: ignore[assignment]


class LakeError(RuntimeError):
    pass


class LakeAccessError(ConfigurationFailure, LakeError):
    """The bucket is missing or the credentials are refused: fails at once, without retries."""


class LakeConflict(LakeError):
    """A conditional write lost: the object is no longer the one that was read (or now exists)."""


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the tag a conditional write compares: the S3 ETag, or locally a
    digest of the content."""

    data: bytes
    etag: str


@dataclass(frozen=True)
class RawDay:
    """A raw day object as read: its row versions and the tag it was read at."""

    frame: pl.DataFrame
    etag: str


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created if missing), across threads and processes.

    Released when the block ends, and by the kernel if the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_fd(fd)
        yield
    finally:
        os.close(fd)


def _lock_fd(fd: int, *, blocking: bool = True) -> bool:
    """Lock an open file exclusively; False if `blocking=False` and someone else holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        return True
    import msvcrt  # Windows: a lock on the first byte

    while True:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            if not blocking:
                return False
            time.sleep(0.01)


_checked_lock = threading.Lock()
_checked_endpoints: set[tuple[str, str]] = set()


def _sweep_temp_files(folder: Path) -> int:
    """Remove the temporary files (`.<name>.<random>.tmp`) that writers which died left in a folder.

    A writer holds a lock on its temporary file from creating it until it is renamed into place
    (`LakeResource.put`), so a temporary file whose lock can be taken has no live writer, however
    slow. Returns how many were removed.
    """
    try:
        names = [n for n in os.listdir(folder) if n.startswith(".") and n.endswith(".tmp")]
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = folder / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # renamed into place or removed meanwhile
        try:
            if not _lock_fd(fd, blocking=False):
                continue  # its writer is alive
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:  # still that file under that name
                    path.unlink()
                    removed += 1
        finally:
            os.close(fd)
    return removed


def frame_to_parquet(frame: pl.DataFrame) -> bytes:
    # zstd level 1: the x100 payment days encode in 0.64 s instead of 0.89 s at the default
    # level 3, for 32.3 MB instead of 32.6 MB (uncompressed: 0.57 s, 48.1 MB).
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", compression_level=1, statistics=True)
    return buf.getvalue()


def parquet_to_frame(
    data: bytes, spec: TableSpec | None = None, columns: list[str] | None = None
) -> pl.DataFrame:
    """Decode an object; with `spec`, a raw day in the lake schema (an object written before the
    capture metadata existed gets its legacy values) or a `LakeError` naming the table."""
    if spec is None:
        return pl.read_parquet(io.BytesIO(data), columns=columns)
    try:
        frame = pl.read_parquet(io.BytesIO(data), columns=columns)
    except pl.exceptions.ColumnNotFoundError:
        present = [c for c in columns or [] if c not in META_SCHEMA]
        frame = pl.read_parquet(io.BytesIO(data), columns=present)
    if any(c not in frame.columns for c in META_SCHEMA if columns is None or c in columns):
        frame = _legacy_meta(frame, columns)
    schema = lake_schema(spec)
    expected = schema if columns is None else pl.Schema({c: schema[c] for c in columns})
    if frame.schema != expected:
        raise LakeError(
            f"lake object for {spec.name!r} has schema {dict(frame.schema)}, expected {dict(expected)}"
        )
    return frame


class LakeResource(dg.ConfigurableResource):
    """Where the lake lives: `s3://bucket/prefix` or a local folder (TOTESYS_LAKE_URL)."""

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
                # Held until the temporary file is renamed or removed: a sweep (`_sweep_temp_files`)
                # removes only temporary files nobody holds, i.e. those of a writer that died.
                _lock_fd(fd)
                if os.fstat(fd).st_nlink == 0:
                    continue  # swept in the instant between creating and locking it: again
                with os.fdopen(fd, "wb", closefd=False) as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                if if_match is None and not if_absent:
                    os.replace(tmp, path)
                else:
                    with _locked(path.parent / LOCK_NAME):
                        current = _digest(path.read_bytes()) if path.exists() else None
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
        return StoredObject(data, _digest(data))

    # --- stale temporary files of the local lake ------------------------------------------------
    def _sweep_once(self, folder: Path) -> None:
        """Sweep a folder's stale temporary files on this resource's first write into it."""
        with self._sweep_lock:
            if folder in self._swept:
                return
            self._swept.add(folder)
        _sweep_temp_files(folder)

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
        """Fetch and decode many Parquet objects (None where missing) on a few threads.

        Decoding is most of a small object's cost and Polars releases the GIL for it: 2,456 x1
        day objects decode in 1.2 s one by one, 0.7 s on 8 threads (2 cores).
        """

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
        """Many local objects as one frame, read by one Polars call on its own threads (×100
        payment, 532 objects: 0.33 -> 0.07 s; the thread pool of `get_frames` pays Python and
        decoder set-up per object).

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

    def put_frames(self, frames: dict[str, pl.DataFrame]) -> None:
        """Write many frames as Parquet objects (key -> frame) on a few threads, each atomically."""

        def put(item: tuple[str, pl.DataFrame]) -> None:
            self.put(item[0], frame_to_parquet(item[1]))

        with ThreadPoolExecutor(max_workers=max(1, min(WRITE_THREADS, len(frames)))) as pool:
            list(pool.map(put, frames.items()))

    # --- raw tables -----------------------------------------------------------------------------
    def raw_days(self, table: str) -> list[str]:
        """The days for which the lake holds an object of a raw table."""
        return [
            k.rsplit("/", 1)[1].removesuffix(".parquet") for k in self.list_keys(self.key("raw", table, ""))
        ]

    def read_raw(
        self, table: str, days: Iterable[str] | None = None, columns: list[str] | None = None
    ) -> pl.DataFrame:
        """Every stored row version of a raw table (all days, or the given days), one frame."""
        present = set(self.raw_days(table))
        wanted = present if days is None else present.intersection(days)
        return self._read_raw_keys(table, [self.raw_key(table, d) for d in sorted(wanted)], columns)

    def read_raw_changes(
        self, table: str, since: datetime | None, columns: list[str] | None = None
    ) -> tuple[pl.DataFrame, datetime | None]:
        """Row versions in the day objects written at or after `since` (all when None), optionally
        only some columns.

        Returns the frame and the newest last-modified time seen: the watermark for the next
        call. `>=` because object stores keep whole-second times; re-reading is harmless.
        """
        objects = self.list_objects(self.key("raw", table, ""))
        changed = sorted(k for k, modified in objects.items() if since is None or modified >= since)
        watermark = max(objects.values(), default=since)
        return self._read_raw_keys(table, changed, columns), watermark

    def _read_raw_keys(self, table: str, keys: list[str], columns: list[str] | None = None) -> pl.DataFrame:
        spec = SOURCE_TABLES[table]
        if keys and not self.is_s3:
            together = self._read_local_together(keys, spec, columns)
            if together is not None:
                return together
        frames = [f for f in self.get_frames(keys, spec, columns).values() if f is not None]
        if frames:
            return pl.concat(frames, how="vertical")
        empty = lake_empty_frame(spec)
        return empty if columns is None else empty.select(columns)

    def read_raw_day(self, table: str, day: str) -> RawDay | None:
        """A raw day object with the etag it was read at (None when the lake has no such day)."""
        found = self.get_object(self.raw_key(table, day))
        if found is None:
            return None
        return RawDay(parquet_to_frame(found.data, SOURCE_TABLES[table]), found.etag)

    def read_raw_days(self, table: str, days: Iterable[str]) -> dict[str, RawDay]:
        """The given days' objects that exist, read on a few threads (see `get_frames`)."""
        days = list(days)
        if len(days) <= 1:
            found = {d: self.read_raw_day(table, d) for d in days}
        else:
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(days))) as pool:
                found = dict(zip(days, pool.map(lambda d: self.read_raw_day(table, d), days), strict=True))
        return {d: obj for d, obj in found.items() if obj is not None}

    def write_raw_day(
        self,
        table: str,
        day: str,
        new: pl.DataFrame,
        existing: RawDay | None,
        *,
        gone: Iterable[int] = (),
        captured_at: datetime | None = None,
    ) -> int:
        """Merge an extract of a day into its object; returns how many versions and tombstones
        were added (`merge_day`).

        `gone` are primary keys observed absent from the source (each gets a tombstone if the day
        holds it, live). `existing` is the day as the caller read it (None: no object); the write
        only replaces that very object (or creates the day only if it still does not exist). If
        another writer stored the day in between, the day is read again and merged again, so the
        versions of both are kept.
        """
        key = self.raw_key(table, day)
        spec = SOURCE_TABLES[table]
        captured_at = captured_at or capture_time()
        gone = list(gone)
        for attempt in range(WRITE_ATTEMPTS):
            merged, added = merge_day(
                spec, None if existing is None else existing.frame, new, gone, captured_at
            )
            if merged is None:
                return 0
            try:
                self.put(
                    key,
                    frame_to_parquet(merged),
                    if_match=None if existing is None else existing.etag,
                    if_absent=existing is None,
                )
                return added
            except LakeConflict:
                existing = self.read_raw_day(table, day)
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise LakeError(
            f"writing {self.uri(key)} failed: another writer replaced it {WRITE_ATTEMPTS} times "
            "while this run merged its versions; nothing of this run was stored for the day"
        )

    # --- per-day fingerprints of what the raw days captured -------------------------------------
    def fingerprints_key(self, table: str) -> str:
        return self.key(FINGERPRINTS_PREFIX, f"{table}.parquet")

    def read_fingerprints(self, table: str) -> dict[str, Fingerprint]:
        """day -> the source fingerprint of that day when the lake last captured it."""
        found = self.get_object(self.fingerprints_key(table))
        return {} if found is None else _fingerprints_of(pl.read_parquet(io.BytesIO(found.data)))

    def record_fingerprints(self, table: str, recorded: dict[str, Fingerprint]) -> None:
        """Record days' fingerprints (read-merge-compare-and-swap, like a raw day)."""
        if not recorded:
            return
        key = self.fingerprints_key(table)
        now = capture_time()
        update = pl.DataFrame(
            [
                {"day": d, "rows": f.rows, "hash": f.hash, "data_version": f.data_version, "recorded_at": now}
                for d, f in sorted(recorded.items())
            ],
            schema=FINGERPRINT_SCHEMA,
        )
        for attempt in range(WRITE_ATTEMPTS):
            found = self.get_object(key)
            old = (
                pl.read_parquet(io.BytesIO(found.data)) if found else pl.DataFrame(schema=FINGERPRINT_SCHEMA)
            )
            merged = pl.concat([old.join(update.select("day"), on="day", how="anti"), update]).sort("day")
            try:
                self.put(
                    key,
                    frame_to_parquet(merged),
                    if_match=found.etag if found else None,
                    if_absent=found is None,
                )
                return
            except LakeConflict:
                time.sleep(random.uniform(0, 0.05 * (attempt + 1)))
        raise LakeError(f"writing {self.uri(key)} failed: another writer replaced it {WRITE_ATTEMPTS} times")


@dataclass(frozen=True)
class Fingerprint:
    """A day of a source table: row count and order-independent sum of row hashes (the data
    version its raw partition was materialised with, once recorded)."""

    rows: int
    hash: str
    data_version: str = ""

    def same_rows(self, other: Fingerprint | None) -> bool:
        other = other or EMPTY_FINGERPRINT
        return (self.rows, self.hash) == (other.rows, other.hash)


EMPTY_FINGERPRINT = Fingerprint(0, "0")


def _fingerprints_of(frame: pl.DataFrame) -> dict[str, Fingerprint]:
    return {
        r["day"]: Fingerprint(r["rows"], r["hash"], r["data_version"] or "")
        for r in frame.iter_rows(named=True)
    }


def capture_time() -> datetime:
    """Now, as the lake stores capture times (UTC, naive, milliseconds)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def merge_day(
    spec: TableSpec,
    existing: pl.DataFrame | None,
    new: pl.DataFrame,
    gone: Iterable[int],
    captured_at: datetime,
) -> tuple[pl.DataFrame | None, int]:
    """A day's object after capturing an extract of it: (the new object, or None when nothing
    changed; how many versions and tombstones were added).

    A row of the extract is a new version when the day holds no version of its key, or the day's
    latest captured state of that key (by last_updated, then capture time) has another content hash
    or is a tombstone. A key in `gone` whose latest state in the day is a live version gets a
    tombstone. Nothing stored is ever dropped or changed.
    """
    pk = spec.primary_key
    new = with_capture_meta(spec, new, captured_at)
    if new[pk].n_unique() != new.height:  # only a caller's concatenation repeats a key
        new = new.unique(subset=[pk], keep="last", maintain_order=True)
    if existing is None or existing.is_empty():
        if new.is_empty():
            return None, 0
        return new.sort(raw_order(spec)), new.height
    latest = latest_captured(spec, existing)
    state = latest.select(pk, pl.col(ROW_HASH).alias("__hash"), pl.col(DELETED).alias("__deleted"))
    fresh = (
        new.join(state, on=pk, how="left")
        .filter(pl.col("__hash").is_null() | pl.col("__deleted") | (pl.col("__hash") != pl.col(ROW_HASH)))
        .drop("__hash", "__deleted")
    )
    gone_ids = pl.Series(pk, list(gone), dtype=spec.polars_schema[pk])
    tombstones = (
        latest.filter(pl.col(pk).is_in(gone_ids.implode()) & ~pl.col(DELETED))
        .join(new.select(pk), on=pk, how="anti")
        .with_columns(
            pl.lit(True).alias(DELETED),
            pl.lit(captured_at, dtype=META_SCHEMA[CAPTURED_AT]).alias(CAPTURED_AT),
        )
    )
    added = fresh.height + tombstones.height
    if not added:
        return None, 0
    merged = pl.concat([existing, fresh, tombstones], how="vertical").sort(raw_order(spec))
    return merged, added


def latest_captured(spec: TableSpec, frame: pl.DataFrame) -> pl.DataFrame:
    """The latest captured state of each key in lake rows: by last_updated, then capture time
    (a tombstone is captured after the version it ends)."""
    pk = spec.primary_key
    return frame.sort([pk, LAST_UPDATED.name, CAPTURED_AT]).unique(
        subset=[pk], keep="last", maintain_order=True
    )


def raw_order(spec: TableSpec) -> list[str]:
    """The row order of a raw day object: oldest version first, then by primary key, then in
    capture order."""
    return [LAST_UPDATED.name, spec.primary_key, CAPTURED_AT]


class RawDays(dict[str, pl.DataFrame]):
    """A raw asset's output: day -> that day's extracted rows (lake schema, capture metadata set).

    Beside the frames, what the step learnt about them: `encoded` holds, for days not yet in the
    lake, the object `merge_day` would write, encoded by the step's workers ahead of the IO
    manager; `unchanged` the days whose source fingerprint equals the one the lake recorded (not
    rewritten); `gone` the keys of each day observed absent from the source (tombstones);
    `existing` day objects the step already read; `fingerprints` what to record once stored.
    """

    def __init__(
        self,
        by_day: dict[str, pl.DataFrame],
        encoded: dict[str, bytes] | None = None,
        *,
        unchanged: Iterable[str] = (),
        gone: dict[str, list[int]] | None = None,
        existing: dict[str, RawDay] | None = None,
        fingerprints: dict[str, Fingerprint] | None = None,
        captured_at: datetime | None = None,
    ):
        super().__init__(by_day)
        self.encoded: dict[str, bytes] = dict(encoded or {})
        self.unchanged: set[str] = set(unchanged)
        self.gone: dict[str, list[int]] = dict(gone or {})
        self.existing: dict[str, RawDay] = dict(existing or {})
        self.fingerprints: dict[str, Fingerprint] = dict(fingerprints or {})
        self.captured_at = captured_at or capture_time()


def split_raw_days(
    spec: TableSpec,
    frame: pl.DataFrame,
    days: Iterable[str],
    encode_days: Iterable[str] = (),
    *,
    captured_at: datetime | None = None,
    open_start: bool = False,
    open_end: bool = False,
) -> RawDays:
    """Split an extract into its days (`split_by_day`) with the capture metadata, encoding the
    `encode_days` that hold rows as new day objects.

    The extract is sorted once (the order of a day object) and split in order, so each day comes
    out sorted; the bytes are those `merge_day` writes for a day the lake does not hold.
    """
    captured_at = captured_at or capture_time()
    frame = with_capture_meta(spec, frame, captured_at)
    unique = frame[spec.primary_key].n_unique() == frame.height
    by_day = split_by_day(
        frame.sort(raw_order(spec)) if unique else frame, days, open_start=open_start, open_end=open_end
    )
    encode = set(encode_days) if unique else set()
    encoded = {day: frame_to_parquet(part) for day, part in by_day.items() if day in encode and part.height}
    return RawDays(by_day, encoded, captured_at=captured_at)


def day_of(column: str, first: str | None = None, last: str | None = None) -> pl.Expr:
    """The partition day (YYYY-MM-DD) of a timestamp column; before `first` is `first`'s, after
    `last` is `last`'s (the first and the current partition hold what lies outside the range)."""
    day = pl.col(column).dt.strftime("%Y-%m-%d")
    if first is not None:
        day = pl.when(day < first).then(pl.lit(first)).otherwise(day)
    if last is not None:
        day = pl.when(day > last).then(pl.lit(last)).otherwise(day)
    return day


def split_by_day(
    frame: pl.DataFrame, days: Iterable[str], *, open_start: bool = False, open_end: bool = False
) -> dict[str, pl.DataFrame]:
    """Split an extract into one frame per partition day (by the date of last_updated).

    `open_start` / `open_end`: the run includes the first / the current partition, which also
    hold the rows dated before / after the partitions' range.
    """
    days = sorted(days)
    if frame.is_empty():
        return {d: frame.clear() for d in days}
    day_col = day_of(
        LAST_UPDATED.name, days[0] if open_start else None, days[-1] if open_end else None
    ).alias("__day")
    parts = frame.with_columns(day_col).partition_by("__day", as_dict=True, include_key=False)
    by_day = {k[0]: v for k, v in parts.items()}
    unexpected = set(by_day) - set(days)
    if unexpected:
        raise LakeError(f"extract holds rows for days outside the requested partitions: {sorted(unexpected)}")
    return {d: by_day.get(d, frame.clear()) for d in days}


class RawLakeIOManager(dg.ConfigurableIOManager):
    """IO manager of the `raw/<table>` assets: one Parquet object per table and day.

    Outputs are `{partition_key: frame}` (a single-run backfill writes each day separately);
    inputs load the requested days as one frame with the table's schema (an empty day is an
    empty frame, not an error).
    """

    lake: LakeResource

    def _spec(self, context: dg.OutputContext | dg.InputContext) -> TableSpec:
        table = context.asset_key.path[-1]
        if table not in SOURCE_TABLES:
            raise LakeError(f"RawLakeIOManager only stores raw source tables, not {context.asset_key}")
        return SOURCE_TABLES[table]

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pl.DataFrame]) -> None:
        spec = self._spec(context)
        days = list(context.asset_partition_keys)
        missing = set(days) - set(obj)
        if missing:
            raise LakeError(f"raw/{spec.name}: no frame for partitions {sorted(missing)}")
        raw = obj if isinstance(obj, RawDays) else RawDays(obj)
        to_write = [d for d in days if d not in raw.unchanged]
        unread = sorted(set(self.lake.raw_days(spec.name)).intersection(to_write) - set(raw.existing))
        existing = {**raw.existing, **self.lake.read_raw_days(spec.name, unread)}

        # Days are independent objects: merge, encode and write them on a few threads (Polars and
        # the file or S3 writes release the GIL). Each object is still written atomically, and only
        # over the object that was read (a day another run stored meanwhile is merged again). A
        # day the lake does not hold is stored as encoded by the step, if it was.
        def write(day: str) -> int:
            gone = raw.gone.get(day, [])
            if day in raw.encoded and day not in existing:
                try:
                    self.lake.put(self.lake.raw_key(spec.name, day), raw.encoded[day], if_absent=True)
                    return raw[day].height
                except LakeConflict:  # another run created the day meanwhile: merge with it
                    existing[day] = self.lake.read_raw_day(spec.name, day)  # type: ignore[assignment]
            return self.lake.write_raw_day(
                spec.name, day, raw[day], existing.get(day), gone=gone, captured_at=raw.captured_at
            )

        with ThreadPoolExecutor(max_workers=max(1, min(WRITE_THREADS, len(to_write)))) as pool:
            added_per_day = list(pool.map(write, to_write))
        # Recorded after the days are stored: a run that dies in between leaves the fingerprints
        # differing from the source's, so the change detector requests the days again.
        self.lake.record_fingerprints(spec.name, {d: f for d, f in raw.fingerprints.items() if d in days})
        new_versions = sum(added_per_day)
        written = sum(1 for added in added_per_day if added)
        # Dagster stamps this metadata on every partition of the run, so it describes the run's
        # write as a whole; per-day row counts are added by the asset itself.
        context.add_output_metadata(
            {
                "run_extracted_rows": sum(f.height for f in obj.values()),
                "run_new_versions": new_versions,
                "run_objects_written": written,
                "run_partitions": len(days),
                "run_days_unchanged": len(days) - len(to_write),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        spec = self._spec(context)
        days = list(context.asset_partition_keys) if context.has_asset_partitions else None
        return self.lake.read_raw(spec.name, days)
