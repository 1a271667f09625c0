"""The steps' pipelining helpers: ordering, bounds, and what happens after a failure."""

import threading
import time

import pytest

from totesys_assets.pipelining import concurrently, read_ahead


def test_read_ahead_keeps_order_bounds_the_lead_and_raises_where_the_item_is_taken():
    """The raw step's pipelining: results come in order, the worker never runs more than `ahead`
    items beyond the one the caller is on, an error surfaces when its item is taken (the items
    before it were delivered), and stopping early runs nothing further."""
    ahead = 2
    taken = [-1]
    too_early: list[int] = []
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        if i > taken[0] + 1 + ahead:
            too_early.append(i)
        if i == 5:
            raise ValueError("table 5 failed")
        return i * 10

    got = []
    with pytest.raises(ValueError, match="table 5 failed"):
        for value in read_ahead(range(8), work, ahead=ahead):
            taken[0] = value // 10
            got.append(value)
    assert got == [0, 10, 20, 30, 40]
    assert too_early == []
    assert 5 in started and not {6, 7} & set(started)  # nothing starts after a failure

    started.clear()
    taken[0] = -1
    early = read_ahead(range(10), work, ahead=ahead)
    assert next(early) == 0
    early.close()  # the caller stops after the first item
    assert set(started) <= {0, 1, 2}


def test_read_ahead_on_two_workers_runs_two_items_at_once_and_still_yields_in_order():
    """The raw step extracts two tables at a time; Dagster still stores them in the given order."""
    together = threading.Barrier(2, timeout=10)

    def work(i: int) -> int:
        if i in (0, 1):
            together.wait()  # items 0 and 1 run at the same time, or this times out
            time.sleep(0.3 if i == 0 else 0.0)  # the first finishes last
        return i

    assert list(read_ahead(range(5), work, ahead=3, workers=2)) == [0, 1, 2, 3, 4]


def test_concurrently_runs_up_to_workers_at_once_and_yields_in_finishing_order():
    """The facts step: the first `workers` items start together, a slow one does not hold back
    the results of those after it, and never more than `workers` run at once."""
    lock = threading.Lock()
    running, most = [0], [0]
    both_started = threading.Barrier(2, timeout=10)

    def work(item: tuple[str, float]) -> str:
        name, seconds = item
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if name in ("slow", "quick"):
            both_started.wait()  # the first two run at the same time, or this times out
        time.sleep(seconds)
        with lock:
            running[0] -= 1
        return name

    items = [("slow", 0.6), ("quick", 0.0), ("third", 0.0), ("fourth", 0.0)]
    assert list(concurrently(items, work, workers=2)) == ["quick", "third", "fourth", "slow"]
    assert most[0] == 2


def test_concurrently_finishes_what_runs_after_a_failure_and_starts_nothing_more():
    """A failed fact load: the load running beside it completes and is delivered (its COMMIT is
    recorded), nothing further starts, then the error is raised. Stopping early waits too."""
    started: list[str] = []
    failed = threading.Event()

    def work(name: str) -> str:
        started.append(name)
        if name == "bad":
            failed.set()
            raise ValueError("bad failed")
        if name == "long":
            assert failed.wait(10)  # still running when "bad" fails
            time.sleep(0.1)
        return name

    got = []
    with pytest.raises(ValueError, match="bad failed"):
        for name in concurrently(["long", "bad", "after", "last"], work, workers=2):
            got.append(name)
    assert got == ["long"]
    assert started == ["long", "bad"]

    started.clear()
    early = concurrently(["a", "b", "c", "d"], lambda n: started.append(n) or n, workers=1)
    assert next(early) == "a"
    early.close()  # the caller stops after the first result
    assert started in (["a"], ["a", "b"])  # "b" started before "a" was handed over; nothing after
