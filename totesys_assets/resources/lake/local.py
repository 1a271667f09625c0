"""Primitives of the local lake folder: file locks across threads and processes, the content
digest that stands in for an S3 ETag, and the sweep of temporary files that dead writers left."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

# The lock file of a local lake folder (hidden: listings skip dot files).
LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; see lock_fd
    fcntl = None  # type: ignore[assignment]


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (created if missing), across threads and processes.

    Released when the block ends, and by the kernel if the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        lock_fd(fd)
        yield
    finally:
        os.close(fd)


def lock_fd(fd: int, *, blocking: bool = True) -> bool:
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


def sweep_temp_files(folder: Path) -> int:
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
            if not lock_fd(fd, blocking=False):
                continue  # its writer is alive
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:  # still that file under that name
                    path.unlink()
                    removed += 1
        finally:
            os.close(fd)
    return removed
