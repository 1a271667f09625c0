"""What the Dagster UI shows of the definitions: honest kinds, the lake's location, the dashboard link."""

from __future__ import annotations

import json

from totesys_assets_tests.conftest import REPO_ROOT
from totesys_assets_tests.helpers import last_json_line, python_in_fresh_env

SHOW = """
import json, warnings
import dagster as dg
warnings.simplefilter("error", dg.BetaWarning)
import totesys_assets.definitions as d
graph = d.defs.resolve_asset_graph()
out = {}
for key in (["raw", "payment"], ["dim_staff"], ["fact_payment"]):
    node = graph.get(dg.AssetKey(key))
    meta = {k: str(getattr(v, "value", v)) for k, v in node.metadata.items() if k in ("lake_location", "dashboard")}
    out["/".join(key)] = {"kinds": sorted(node.kinds), **meta}
print(json.dumps(out))
"""


def _ui(**env: str) -> dict:
    return last_json_line(python_in_fresh_env(SHOW, **env))


def test_embedded_demo_shows_a_local_parquet_lake_and_the_local_dashboard(tmp_path):
    ui = _ui(TOTESYS_HOME=str(tmp_path))
    assert ui["raw/payment"] == {
        "kinds": ["parquet", "polars", "postgres"],
        "lake_location": str(tmp_path / "lake" / "raw" / "payment") + "/",
    }
    assert ui["dim_staff"] == {"kinds": ["parquet", "polars", "postgres"]}
    assert ui["fact_payment"]["dashboard"] == "http://127.0.0.1:8501"


def test_a_deployment_shows_its_bucket_and_its_dashboard_and_no_password(tmp_path):
    ui = _ui(
        TOTESYS_HOME=str(tmp_path),
        TOTESYS_DB_URL="postgresql://reader:s3cret@db.example/totesys",
        WAREHOUSE_DB_URL="postgresql://loader:s3cret@wh.example/warehouse",
        TOTESYS_LAKE_URL="s3://totes-lake/prod/",
        TOTESYS_DASHBOARD_URL="https://dash.example/totes",
    )
    assert ui["raw/payment"] == {
        "kinds": ["polars", "postgres", "s3"],
        "lake_location": "s3://totes-lake/prod/raw/payment/",
    }
    assert ui["fact_payment"]["dashboard"] == "https://dash.example/totes"
    assert "s3cret" not in json.dumps(ui)
    # Without TOTESYS_DASHBOARD_URL a deployment links to no dashboard it cannot know of.
    no_link = _ui(TOTESYS_HOME=str(tmp_path), WAREHOUSE_DB_URL="postgresql://loader@wh.example/warehouse")
    assert "dashboard" not in no_link["fact_payment"]


def test_a_raw_run_warns_nothing_from_our_code(pg, tmp_path, monkeypatch):
    import warnings

    import dagster as dg

    from totesys_assets.raw.assets import raw_assets
    from totesys_assets.resources.config import build_resources

    url, sim = pg.new_source("quiet_src", seed=3, days=2)
    monkeypatch.setenv("TOTESYS_DB_URL", url)
    monkeypatch.setenv("TOTESYS_LAKE_URL", str(tmp_path / "lake"))
    day = sim.now().date().isoformat()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dg.materialize(raw_assets, resources=build_resources(), partition_key=day).success
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "/totesys_assets/" in w.filename]
    assert ours == []


def test_a_deployment_with_a_missing_url_fails_at_load_time_naming_it(tmp_path):
    env = {
        "TOTESYS_HOME": str(tmp_path / "home"),
        "TOTESYS_DEPLOYMENT": "1",
        "TOTESYS_DB_URL": "postgresql://reader:s3cret@db.example/totesys",
        "TOTESYS_LAKE_URL": "s3://totes-lake/prod",
    }
    out = python_in_fresh_env("import totesys_assets.definitions", **env)
    assert out.returncode != 0
    assert "WAREHOUSE_DB_URL is not set" in out.stderr and "TOTESYS_DEPLOYMENT=1" in out.stderr
    assert "s3cret" not in out.stderr
    assert not (tmp_path / "home").exists(), "a deployment started the embedded demo"
    # With every URL set it loads, and the image sets the variable.
    env["WAREHOUSE_DB_URL"] = "postgresql://loader@wh.example/warehouse"
    loaded = python_in_fresh_env("import totesys_assets.definitions", **env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "ENV TOTESYS_DEPLOYMENT=1" in (REPO_ROOT / "deploy" / "Dockerfile").read_text()


def test_the_embedded_demo_refuses_to_start_in_a_deployment(tmp_path, monkeypatch):
    import pytest

    from totesys_assets import embedded
    from totesys_assets.settings import MissingSettingError

    monkeypatch.setenv("TOTESYS_HOME", str(tmp_path))
    monkeypatch.setenv("TOTESYS_DEPLOYMENT", "1")
    for call, name in ((embedded.source_url, "TOTESYS_DB_URL"), (embedded.warehouse_url, "WAREHOUSE_DB_URL"),
                       (embedded.lake_root, "TOTESYS_LAKE_URL")):  # fmt: skip
        with pytest.raises(MissingSettingError, match=name):
            call()
    assert not (tmp_path / "pg").exists()


def test_every_column_in_the_ui_says_what_it_means():
    from totesys_assets.specs import SOURCE_TABLES, WAREHOUSE_TABLES

    for spec in [*SOURCE_TABLES.values(), *WAREHOUSE_TABLES.values()]:
        undescribed = [c.name for c in spec.table_schema().columns if not c.description]
        assert undescribed == [], spec.name
