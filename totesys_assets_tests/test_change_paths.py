"""Changes that fall between the cracks of the partitioning reach the warehouse with no manual launch:
rows dated before the first partition or in the future, a late-arriving version, an outage longer
than any look-back, and a refresh that finds nothing requests nothing. Each test drives the change
sensor and the automation in process (automation_driver.py) over a real source, lake and warehouse,
starting from copies of one state that automation loaded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg
import pytest
from dagster_aws.s3 import S3Resource
from polars.testing import assert_frame_equal

from totesys_assets.partitions import daily_partitions
from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.lake import DELETED, LakeResource
from totesys_assets.resources.source import TotesysSource
from totesys_assets.resources.warehouse import WarehouseResource
from totesys_assets.simulator import Simulator
from totesys_assets.specs import SOURCE_TABLES
from totesys_assets.star.assets import DIMENSIONS, FACTS, star_assets
from totesys_assets.star.checks import star_checks
from totesys_assets_tests.automation_driver import Driver
from totesys_assets_tests.e2e_support import write_quick_start_instance
from totesys_assets_tests.helpers import materialize_range

SEED = 7
STOPPED = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=40)
ALL = [*raw_assets, *star_assets, *star_checks]


def _instance(home: Path, storage_url: str) -> dg.DagsterInstance:
    """The quick start's instance (totesys-dev's dagster.yaml) on its own storage database."""
    write_quick_start_instance(home, storage_url)
    return dg.DagsterInstance.from_config(str(home))


@dataclass
class State:
    """A source, lake, warehouse and Dagster instance as the daemon left them."""

    driver: Driver
    source_url: str
    warehouse_url: str
    storage_url: str
    lake_dir: Path

    @property
    def sim(self) -> Simulator:
        return Simulator(self.source_url, seed=SEED)

    @property
    def wh(self) -> WarehouseResource:
        return WarehouseResource(url=self.warehouse_url)

    @property
    def lake(self) -> LakeResource:
        return LakeResource(url=str(self.lake_dir), s3=S3Resource())

    @classmethod
    def start(cls, folder: Path, mp: pytest.MonkeyPatch, urls: tuple[str, str, str], **cursors) -> State:
        source_url, warehouse_url, storage_url = urls
        mp.setenv("TOTESYS_DB_URL", source_url)
        mp.setenv("TOTESYS_LAKE_URL", str(folder / "lake"))
        mp.setenv("WAREHOUSE_DB_URL", warehouse_url)
        # Every tick compares the whole history here (old in-place changes, rows dated 2021); the
        # recent-days ticks in between have their own test (test_change_capture.py).
        mp.setenv("TOTESYS_FULL_CHECK_S", "0")
        instance = _instance(folder / "home", storage_url)
        driver = Driver(ALL, build_resources(), instance=instance, **cursors)
        return cls(driver, source_url, warehouse_url, storage_url, folder / "lake")

    def clone(self, pg, folder: Path, mp: pytest.MonkeyPatch) -> State:
        """A copy of every store (databases by template, the lake folder by copy) and the cursors."""
        self.driver.instance.dispose()
        shutil.copytree(self.lake_dir, folder / "lake")
        urls = (
            pg.clone_db(self.source_url, "paths"),
            pg.clone_db(self.warehouse_url, "paths"),
            pg.clone_db(self.storage_url, "paths"),
        )
        cursors = {
            "sensor_cursor": self.driver.sensor_cursor,
            "automation_cursor": self.driver.automation_cursor,
            "clock": self.driver.clock,
        }
        return State.start(folder, mp, urls, **cursors)


@pytest.fixture(scope="module")
def stopped(pg, tmp_path_factory) -> Iterator[State]:
    """Three days of history that automation alone loaded on a first start, forty days ago; then
    the daemon stopped."""
    url, _ = pg.new_source("paths_src", seed=SEED, end=STOPPED, days=3)
    with pytest.MonkeyPatch.context() as mp:
        urls = (url, pg.new_db("paths_wh"), pg.new_db("paths_dagster"))
        state = State.start(tmp_path_factory.mktemp("stopped"), mp, urls)
        ran = state.driver.settle()
        assert {a for a, _ in ran} >= {"sales_order", "dim_staff", "fact_sales_order"}
        yield state


@pytest.fixture(scope="module")
def caught_up(stopped, pg, tmp_path_factory) -> Iterator[State]:
    """`stopped` after forty days of source activity with nothing running (new orders every day,
    payments, in-place changes, and one order from before the outage changed in place), and one
    settle of the restarted daemon."""
    with pytest.MonkeyPatch.context() as mp:
        state = stopped.clone(pg, tmp_path_factory.mktemp("caught_up"), mp)
        counts = state.sim.advance()
        assert counts["sales_order"] > 40
        with psycopg.connect(state.source_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE sales_order SET units_sold = units_sold + 5 "
                "WHERE sales_order_id = (SELECT min(sales_order_id) FROM sales_order)"
            )
        state.driver.settle()
        yield state


@pytest.fixture
def live(caught_up, pg, tmp_path, monkeypatch) -> State:
    """A copy of `caught_up` for one test to change."""
    return caught_up.clone(pg, tmp_path, monkeypatch)


def assert_warehouse_is_the_source(state: State) -> None:
    """Every dimension and every `*_current` view equals the transform of the current source."""
    wh = state.wh
    source = TotesysSource(url=state.source_url)
    current = {t: source.extract(spec, None, None) for t, spec in SOURCE_TABLES.items()}
    for table in DIMENSIONS:
        expected = table.transform(*(current[s] for s in table.sources))
        got = wh.read_table(table.name).select(expected.columns).sort(table.spec.primary_key)
        assert_frame_equal(got, expected, check_row_order=False)
    for fact in FACTS:
        natural_id = fact.spec.natural_key[0]
        expected = fact.transform(current[fact.sources[0]]).drop("captured_at").sort(natural_id)
        got = wh.read_table(f"{fact.name}_current").select(expected.columns).sort(natural_id)
        assert_frame_equal(got, expected, check_dtypes=False)


def _order(wh: WarehouseResource, order_id: int) -> dict:
    return wh.fetch_one_dict(
        "SELECT * FROM fact_sales_order_current WHERE sales_order_id = %(id)s", {"id": order_id}
    )


def test_after_a_range_backfill_a_refresh_that_finds_nothing_requests_nothing(
    stopped, pg, tmp_path, monkeypatch
):
    state = stopped.clone(pg, tmp_path, monkeypatch)
    driver = state.driver
    assert driver.settle() == []  # loaded: the sensor finds no differing day, automation is quiet

    # The history came in as one range run. Refreshing one of its days, or the whole range again,
    # finds nothing new: no dimension reload, no old fact partition, no raw day requested.
    last = daily_partitions.get_last_partition_key()
    yesterday = (datetime.fromisoformat(last) - timedelta(days=1)).date().isoformat()
    loaded = (STOPPED - timedelta(days=1)).date().isoformat()
    for first, end in ((loaded, loaded), (daily_partitions.get_first_partition_key(), yesterday)):
        assert materialize_range(raw_assets, driver.resources, first, end, instance=driver.instance).success
        assert driver.evaluate() == {}
    assert driver.settle() == []
    assert_warehouse_is_the_source(state)


def test_an_outage_longer_than_any_look_back_loses_no_day(stopped, caught_up):
    """Forty days without the daemon: one settle after the restart brings every day in."""
    stored = caught_up.lake.read_raw("sales_order")
    source = TotesysSource(url=caught_up.source_url).extract(SOURCE_TABLES["sales_order"], None, None)
    days = set(source["last_updated"].dt.date().cast(pl.String))
    assert len(days - set(stopped.lake.raw_days("sales_order"))) >= 20  # order days in the forty
    assert days <= set(caught_up.lake.raw_days("sales_order"))
    assert not stored[DELETED].any()
    # the order changed in place during the outage has its second version
    first_order = source["sales_order_id"].min()
    assert stored.filter(pl.col("sales_order_id") == first_order).height == 2
    assert caught_up.driver.settle() == []
    assert_warehouse_is_the_source(caught_up)


def test_rows_dated_before_the_first_partition_or_in_the_future_are_captured_and_detection_goes_on(live):
    first = daily_partitions.get_first_partition_key()
    last = daily_partitions.get_last_partition_key()
    early = live.sim.insert_sales_order(at=datetime(2021, 6, 1, 12))
    future = live.sim.insert_sales_order(at=datetime(2099, 1, 1, 12))

    ran = live.driver.settle()
    # the early row belongs to the first partition, the future one to the current (documented)
    assert ("sales_order", first) in ran and ("sales_order", last) in ran, ran
    assert ("fact_sales_order", first) in ran and ("fact_sales_order", last) in ran, ran
    assert _order(live.wh, early)["last_updated_date"].isoformat() == "2021-06-01"
    assert _order(live.wh, future)["last_updated_date"].isoformat() == "2099-01-01"

    # The future-dated row pins nothing: an in-place change of another order (last_updated left as
    # it was) is still found and carried through in the next tick.
    with psycopg.connect(live.source_url, autocommit=True) as conn:
        day = conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 7 WHERE sales_order_id = "
            "(SELECT min(sales_order_id) FROM sales_order WHERE last_updated >= now() - interval '3 days') "
            "RETURNING last_updated::date::text"
        ).fetchone()[0]
    ran = live.driver.settle()
    assert ("sales_order", day) in ran and ("fact_sales_order", day) in ran, ran
    assert live.driver.settle() == []
    assert_warehouse_is_the_source(live)


def test_a_late_arriving_version_two_days_back_reaches_the_warehouse(live):
    """Written now, stamped two days back (before the version the warehouse holds)."""
    two_days_back = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    with psycopg.connect(live.source_url, autocommit=True) as conn:
        order_id, units = conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 3, last_updated = %s WHERE sales_order_id = "
            "(SELECT max(sales_order_id) FROM sales_order) RETURNING sales_order_id, units_sold",
            (two_days_back,),
        ).fetchone()
    ran = live.driver.settle()
    day = two_days_back.date().isoformat()
    assert ("sales_order", day) in ran and ("fact_sales_order", day) in ran, ran
    row = _order(live.wh, order_id)
    assert row["units_sold"] == units and row["last_updated_date"].isoformat() == day
    assert_warehouse_is_the_source(live)


def test_a_change_to_one_order_is_one_run_through_raw_the_dimensions_that_read_it_and_the_fact(live):
    """The change sensor requests the raw day, the dimensions reading sales_order and the fact day
    in one run; automation then requests nothing, so nothing is loaded twice."""
    with psycopg.connect(live.source_url, autocommit=True) as conn:
        order_id, units, day = conn.execute(
            "UPDATE sales_order SET units_sold = units_sold + 1 WHERE sales_order_id = "
            "(SELECT max(sales_order_id) FROM sales_order) "
            "RETURNING sales_order_id, units_sold, last_updated::date::text"
        ).fetchone()
    ran = live.driver.settle()
    assert ran == [("dim_date", None), ("fact_sales_order", day), ("sales_order", day)]
    (run,) = live.driver.sensor_runs
    assert run.dagster_run.tags["totesys/trigger"] == "source_change"
    checks = {e.asset_key.path[-1] for e in run.get_asset_check_evaluations()}
    assert checks == {"fact_sales_order", "dim_date"}, checks
    assert _order(live.wh, order_id)["units_sold"] == units
    assert live.driver.settle() == []
    assert_warehouse_is_the_source(live)
