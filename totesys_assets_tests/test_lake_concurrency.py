"""Overlapping writers of one raw day keep every version, and a killed writer's leftovers go away.

The interleaving that used to lose a version is produced deterministically with two real runs of
`raw/sales_order` for the same day against the real source: run A extracts the day, and its PUT
is held (the one hook here: `HeldLake` waits before handing the write to the real lake) until the
source row has changed and run B has extracted and stored the new version. Released, A's write
must not overwrite B's object. On moto's S3 server (which, like AWS S3, refuses a PUT whose
`If-Match` / `If-None-Match` no longer holds; unlike S3 its check is not atomic with the write, so
two PUTs racing in the same instant cannot be tested against it) and on a local lake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import ClassVar

import dagster as dg
import polars as pl
import psycopg
import pytest
from dagster_aws.s3 import S3Resource

from totesys_assets.raw.assets import raw_asset_key, raw_assets
from totesys_assets.resources.lake import LakeConflict, LakeResource, RawLakeIOManager
from totesys_assets.resources.source import TotesysSource
from totesys_assets_tests.helpers import raw_materializations

ONLY_SALES = {"assets": raw_assets, "selection": [raw_asset_key("sales_order")]}


class HeldLake(LakeResource):
    """The lake of run A: its first write of `held_key` waits until the test releases it.

    (Class-level state: Dagster re-creates configured resources for a run.)
    """

    held_key: str
    reached: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()
    puts: ClassVar[list[str]] = []

    def put(self, key: str, data: bytes, **conditions) -> None:
        if key == self.held_key:
            type(self).puts.append("if_match" if conditions.get("if_match") else "if_absent")
            if len(type(self).puts) == 1:
                type(self).reached.set()
                assert type(self).release.wait(60), "the test never released run A's write"
        super().put(key, data, **conditions)


def _resources(source: str, lake: LakeResource) -> dict:
    return {"source": TotesysSource(url=source), "lake": lake, "raw_io_manager": RawLakeIOManager(lake=lake)}


def _lake_url(kind: str, s3, tmp_path: Path) -> str:
    return f"s3://{s3.new_bucket()}/totes" if kind == "s3" else str(tmp_path / "lake")


@pytest.fixture
def source(pg) -> str:
    url, _ = pg.new_source("overlap_src", seed=3, days=4)
    return url


def _an_order_and_its_day(url: str) -> tuple[int, str]:
    with psycopg.connect(url) as conn:
        order_id, day = conn.execute(
            "SELECT sales_order_id, last_updated::date FROM sales_order ORDER BY last_updated DESC LIMIT 1"
        ).fetchone()
    return order_id, day.isoformat()


def _versions(lake: LakeResource, day: str, order_id: int) -> list[tuple[int, object]]:
    frame = lake.read_raw("sales_order", [day]).filter(pl.col("sales_order_id") == order_id)
    return frame.sort("last_updated").select("units_sold", "last_updated").rows()


def _change(url: str, order_id: int) -> None:
    """A new version of the order, later the same day (units_sold + 7)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 7, "
            "last_updated = last_updated + interval '1 second' WHERE sales_order_id = %s",
            (order_id,),
        )


@pytest.mark.parametrize("kind", ["s3", "local"])
@pytest.mark.parametrize("day_exists", [False, True], ids=["new_day", "existing_day"])
def test_overlapping_refreshes_of_one_day_keep_every_version(source, s3, tmp_path, kind, day_exists):
    lake_url = _lake_url(kind, s3, tmp_path)
    order_id, day = _an_order_and_its_day(source)
    plain = LakeResource(url=lake_url, s3=S3Resource())
    if day_exists:  # the lake already holds the day: A and B both merge into that object
        assert dg.materialize(**ONLY_SALES, resources=_resources(source, plain), partition_key=day).success
        _change(source, order_id)
    HeldLake.reached.clear()
    HeldLake.release.clear()
    HeldLake.puts.clear()
    held = HeldLake(url=lake_url, s3=S3Resource(), held_key=plain.raw_key("sales_order", day))

    # Run A extracts the day (the order's current version) and is held at its write.
    results: dict[str, dg.ExecuteInProcessResult] = {}
    run_a = threading.Thread(
        target=lambda: results.setdefault(
            "a", dg.materialize(**ONLY_SALES, resources=_resources(source, held), partition_key=day)
        )
    )
    run_a.start()
    try:
        assert HeldLake.reached.wait(60), "run A never reached its write"
        # The order changes again; run B extracts and stores that version while A waits.
        _change(source, order_id)
        results["b"] = dg.materialize(**ONLY_SALES, resources=_resources(source, plain), partition_key=day)
        assert results["b"].success
    finally:
        HeldLake.release.set()
        run_a.join(120)
    assert results["a"].success

    # A's first write lost (the day is no longer the object A read, or now exists); A read the day
    # again, merged and stored its version beside B's. Nothing of either run is missing.
    assert HeldLake.puts == ["if_match" if day_exists else "if_absent", "if_match"]
    versions = [units for units, _ in _versions(plain, day, order_id)]
    first = versions[0]
    assert versions == ([first, first + 7, first + 14] if day_exists else [first, first + 7])
    with psycopg.connect(source) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM sales_order WHERE last_updated::date = %s::date", (day,)
        ).fetchone()[0]
    added = {
        r: raw_materializations(results[r], "sales_order")[0].metadata["run_new_versions"].value for r in "ab"
    }
    assert added == {"a": 1, "b": 1 if day_exists else rows}  # A: its version; B: its version (or the day)
    # every source row of the day, and the order's older versions
    assert plain.read_raw("sales_order", [day]).height == rows + len(versions) - 1


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_conditional_write_refuses_an_object_that_changed(s3, tmp_path, kind):
    lake = LakeResource(url=_lake_url(kind, s3, tmp_path), s3=S3Resource())
    key = "raw/currency/2024-01-02.parquet"
    lake.put(key, b"one", if_absent=True)
    with pytest.raises(LakeConflict):
        lake.put(key, b"two", if_absent=True)
    first = lake.get_object(key)
    assert first is not None and first.data == b"one"
    lake.put(key, b"two", if_match=first.etag)
    with pytest.raises(LakeConflict):
        lake.put(key, b"three", if_match=first.etag)  # the etag of an object replaced since
    assert lake.get(key) == b"two"
    if kind == "local":
        folder = tmp_path / "lake" / "raw" / "currency"
        assert sorted(p.name for p in folder.iterdir()) == [".lock", "2024-01-02.parquet"]


# --- a killed writer's temporary files ----------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from dagster_aws.s3 import S3Resource
    from totesys_assets.resources.lake import LakeResource

    root, key, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    fsync = os.fsync

    def slow_fsync(fd):
        print("writing", flush=True)  # the temporary file is written, not yet renamed into place
        while not go.exists():
            time.sleep(0.05)
        fsync(fd)

    os.fsync = slow_fsync
    LakeResource(url=root, s3=S3Resource()).put(key, b"from " + key.encode())
    """
)


def _start_writer(root: Path, key: str, go: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), key, str(go)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def test_the_next_write_of_a_table_removes_what_killed_writers_left(tmp_path):
    root = tmp_path / "lake"
    folder = root / "raw" / "sales_order"
    go = tmp_path / "go"
    # One writer is alive, in the middle of writing its object; another is killed (kill -9) in the
    # middle of writing its own (its first write of the folder swept it: the live file stayed).
    alive = _start_writer(root, "raw/sales_order/2024-01-04.parquet", go)
    try:
        killed = _start_writer(root, "raw/sales_order/2024-01-02.parquet", go)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        temporary = sorted(p.name for p in folder.iterdir())
        assert len(temporary) == 2 and all(n.startswith(".") and n.endswith(".tmp") for n in temporary)
        assert LakeResource(url=str(root), s3=S3Resource()).raw_days("sales_order") == []

        # The next write of the table (another run: a new resource) removes the dead writer's
        # file and leaves the live writer's alone.
        LakeResource(url=str(root), s3=S3Resource()).put("raw/sales_order/2024-01-05.parquet", b"next")
        left = sorted(p.name for p in folder.iterdir())
        assert (
            len(left) == 2 and left[0].startswith(".2024-01-04.parquet.") and left[1] == "2024-01-05.parquet"
        )
    finally:
        go.touch()
        assert alive.wait(30) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["2024-01-04.parquet", "2024-01-05.parquet"]
    assert (folder / "2024-01-04.parquet").read_bytes() == b"from raw/sales_order/2024-01-04.parquet"
