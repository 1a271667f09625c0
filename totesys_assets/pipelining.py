"""Overlapping a step's work with Dagster's bookkeeping of earlier results (and with itself)."""

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, ThreadPoolExecutor, wait
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def read_ahead(items: Iterable[_T], work: Callable[[_T], _R], ahead: int, workers: int = 1) -> Iterator[_R]:
    """`work(item)` for each item in order, computed on `workers` threads up to `ahead` items
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
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read-ahead") as pool:
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


def concurrently(items: Iterable[_T], work: Callable[[_T], _R], workers: int) -> Iterator[_R]:
    """`work(item)` for each item, up to `workers` at a time, in the given order; results are
    yielded as they finish, and the next item starts before a result is handed to the caller.

    After an error nothing further is started: the running items finish, their results are
    yielded, then the first error is raised. When the caller stops early, nothing further is
    started and the running items are waited for.
    """
    remaining = iter(items)
    stop = threading.Event()
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="concurrently") as pool:
        running: set[Future[_R]] = set()

        def start_next() -> None:
            if not stop.is_set():
                for item in remaining:
                    running.add(pool.submit(work, item))
                    return

        try:
            for _ in range(workers):
                start_next()
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                # failures first, so that nothing starts after a batch that holds one
                for future in sorted(finished, key=lambda f: f.exception() is None):
                    running.discard(future)
                    if future.exception() is not None:
                        error = error or future.exception()
                        stop.set()
                        continue
                    start_next()
                    yield future.result()
            if error is not None:
                raise error
        finally:
            stop.set()
