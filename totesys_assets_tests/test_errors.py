"""Errors that say what to do: S3, source and warehouse failures name the setting, and the ones no
retry can fix (a missing bucket or database, refused or missing credentials) fail at once."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from totesys_assets.raw.assets import raw_assets
from totesys_assets.resources.config import build_resources
from totesys_assets.resources.lake import LakeAccessError, LakeResource
from totesys_assets.resources.warehouse import WarehouseAccessError, WarehouseResource
from totesys_assets_tests.helpers import failure_text


def _raw_run(day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(raw_assets, resources=build_resources(), partition_key=day, raise_on_error=False)


def _retries(result: dg.ExecuteInProcessResult) -> int:
    return sum(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


@pytest.fixture
def source(pg, monkeypatch):
    url, sim = pg.new_source("err_src", seed=8, days=2)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    return url, sim.now().date().isoformat()


def test_a_missing_bucket_names_the_lake_setting_and_fails_without_retries(source, s3_server, monkeypatch):
    monkeypatch.setenv("TOTESYS_LAKE_URL", "s3://no-such-totes-bucket/lake")
    result = _raw_run(source[1])
    assert not result.success
    text = failure_text(result)
    assert "s3://no-such-totes-bucket/lake" in text and "TOTESYS_LAKE_URL" in text
    assert "NoSuchBucket" in text and "AWS_ENDPOINT_URL_S3" in text
    assert _retries(result) == 0


def test_missing_aws_credentials_fail_at_once_naming_what_to_set(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")  # never reached: signing fails first
    lake = LakeResource(url="s3://totes/lake", s3=S3Resource(region_name="eu-west-2"))
    with pytest.raises(LakeAccessError) as err:
        lake.get("raw/payment/2024-11-15.parquet")
    assert err.value.allow_retries is False
    assert "Unable to locate credentials" in str(err.value) and "AWS_ACCESS_KEY_ID" in str(err.value)


def test_a_missing_source_database_fails_at_once_a_down_server_is_retried(pg, tmp_path, monkeypatch):
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("TOTESYS_DB_URL", pg.url("no_such_totesys"))
    result = _raw_run("2024-11-15")
    text = failure_text(result)
    assert not result.success and 'database "no_such_totesys" does not exist' in text
    assert "check TOTESYS_DB_URL" in text
    assert _retries(result) == 0

    # A server that is not there (yet) may come back: the retry policy retries that.
    monkeypatch.setenv("TOTESYS_DB_URL", "postgresql://reader:s3cret@/totesys?host=/tmp/no-such-socket-dir")
    down = _raw_run("2024-11-15")
    assert not down.success and _retries(down) >= 1
    assert "cannot connect to the totesys source" in failure_text(down) and "s3cret" not in failure_text(down)


def test_a_missing_warehouse_database_is_a_configuration_failure(pg):
    warehouse = WarehouseResource(url=pg.url("no_such_warehouse"))
    with pytest.raises(WarehouseAccessError) as err:
        warehouse.ensure_schema()
    assert err.value.allow_retries is False
    assert "check WAREHOUSE_DB_URL" in str(err.value) and "no_such_warehouse" in str(err.value)
