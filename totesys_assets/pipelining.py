"""Overlapping a step's I/O-bound work with Dagster's bookkeeping of the previous result."""

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def read_ahead(items: Iterable[_T], work: Callable[[_T], _R], ahead: int) -> Iterator[_R]:
    """`work(item)` for each item in order, computed on one worker thread up to `ahead` items
    before the caller asks for them.

    An error is raised where its item's result is taken, and no later item is started after it
    (a failed extract or load is not followed by more writes the run will not record). When the
    caller stops early, nothing further is started and the running item is waited for.
    """
    stop = threading.Event()

    def guarded(item: _T) -> _R:
        if stop.is_set():
            raise CancelledError("an earlier item failed or the caller stopped")
        try:
            return work(item)
        except BaseException:
            stop.set()
            raise

    pending: list[Future[_R]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-ahead") as pool:
        try:
            for item in items:
                pending.append(pool.submit(guarded, item))
                if len(pending) > ahead:
                    yield pending.pop(0).result()
            while pending:
                yield pending.pop(0).result()
        finally:
            stop.set()
            for future in pending:
                future.cancel()
