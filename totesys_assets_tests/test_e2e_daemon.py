"""End to end under the real daemon: a source change reaches the warehouse with nobody launching a run.

`dagster dev` (webserver + daemon + code server) runs on deploy/dagster.local.yaml copied verbatim
into a temporary DAGSTER_HOME, with Dagster's storage in an embedded PostgreSQL database, a simulator
source, a warehouse database and a moto S3 lake. The warehouse is first brought up to date
headlessly (the README's sequence, in-process, in the same instance), so the test measures the
incremental path: a new sales order at the source -> source_change_sensor -> one run of the raw
day, the dimensions reading it and the fact day -> the row in fact_sales_order; star_automation
then requests nothing.

The raw refresh schedule and the automation heartbeat are moved to a yearly cron (QUIET_CRONS in
e2e_support.py) so that only the two sensors act. Latency and the milestones of every change are
printed and recorded with `record_property`; bench/latency.py measures p50/p95 with the same
machinery.
"""

from __future__ import annotations

import time

import dagster as dg
import pytest

from totesys_assets_tests.e2e_support import (
    AUTOMATION_SENSOR,
    CHANGE_SENSOR,
    DagsterDev,
    catch_up_headlessly,
    format_runs,
    init_instance,
    measure_change,
    prepare_deployment,
    runs_since,
    wait_until_quiet,
)

MATERIALIZED = dg.DagsterEventType.ASSET_MATERIALIZATION
CHANGES = 2
LATENCY_BOUND_S = 240  # generous: the path is well under it even on a busy 2-CPU machine
SETTLE_TIMEOUT_S = 300

RUNS_BY_SENSOR = """
query RunsBySensor($sensor: String!) {
  runsOrError(filter: {tags: [{key: "dagster/sensor_name", value: $sensor}]}) {
    ... on Runs { results { runId status tags { key value } } }
    ... on PythonError { message }
  }
}
"""


@pytest.mark.slow
def test_source_changes_reach_the_warehouse_under_the_daemon(
    pg, s3_server, tmp_path, record_property, capsys
):
    t_test = time.monotonic()
    deployment = prepare_deployment(
        new_db=pg.new_db,
        new_bucket=s3_server.new_bucket,
        s3_endpoint=s3_server.endpoint_url,
        workdir=tmp_path,
        days=3,
        sensor_interval_s=4,
        automation_interval_s=5,
    )
    init_instance(deployment)
    setup = catch_up_headlessly(deployment)

    dev = DagsterDev(deployment, tmp_path / "dagster_dev.log")
    report: list[str] = [f"headless catch-up: {', '.join(f'{k} {v:.1f}s' for k, v in setup.items())}"]
    measurements = []
    try:
        t_dev = time.time()
        report.append(f"dagster dev serving after {dev.start():.1f}s")
        with deployment.instance() as instance:
            # The change sensor's first tick (empty cursor) compares the whole history with the
            # lake; nothing differs, so nothing runs and automation stays quiet.
            report.append(f"settled after {wait_until_quiet(instance, timeout=SETTLE_TIMEOUT_S):.1f}s")
            first_tick = runs_since(instance, t_dev)
            report.append(format_runs(first_tick))
            assert all(r.kind == "raw" for r in first_tick), (
                "automation reacted to a refresh that found nothing new"
            )
            # New orders, then an in-place change of an existing one (last_updated untouched, as
            # the real source does it), which must reach fact_sales_order_current.
            for i, in_place in enumerate([False] * CHANGES + [True]):
                if i:
                    wait_until_quiet(instance, timeout=SETTLE_TIMEOUT_S)
                m = measure_change(deployment, instance, timeout=LATENCY_BOUND_S, in_place=in_place)
                measurements.append(m)
                record_property(f"change_{i + 1}_{m.change}_latency_s", round(m.latency_s, 1))
                record_property(f"change_{i + 1}_stages_s", {k: round(v, 1) for k, v in m.stages.items()})
                milestones = " ".join(f"{k}={v:.1f}" for k, v in m.stages.items())
                report += [
                    f"change {i + 1} ({m.change}): sales order {m.sales_order_id} in the warehouse after "
                    f"{m.latency_s:.1f}s [{milestones}]",
                    format_runs(m.runs),
                ]

            # Launched by the change sensor, never by hand: one run per change carries the raw
            # day, the dimensions that read it and the fact day; automation adds nothing.
            runs = [r for m in measurements for r in m.runs]
            assert runs and all(r.sensor == CHANGE_SENSOR for r in runs), format_runs(runs)
            assert not [r for r in runs if r.status in ("FAILURE", "CANCELED")], format_runs(runs)
            for m in measurements:
                (run,) = m.runs
                assert run.kind == "chain", format_runs(m.runs)
                assert {"raw/sales_order", "fact_sales_order", "dim_date"} <= set(run.assets), run.assets
            wait_until_quiet(instance, timeout=SETTLE_TIMEOUT_S)
            since_dev = runs_since(instance, t_dev)
            ids = [r.run_id for r in since_dev]
            after = since_dev[ids.index(runs[-1].run_id) + 1 :]
            # Under load an automation evaluation can interleave with the chain run so that it
            # sees the raw change but not the fact's load (docs/decisions.md, "Known limits"); it
            # then reloads the fact day once more, which must add nothing.
            for extra in after:
                assert extra.kind == "facts" and extra.trigger == AUTOMATION_SENSOR, format_runs(after)
                for event in instance.get_records_for_run(extra.run_id, of_type=MATERIALIZED).records:
                    meta = event.event_log_entry.asset_materialization.metadata  # type: ignore[union-attr]
                    assert meta["rows_inserted"].value == 0, format_runs(after)

            # The webserver (GraphQL) sees the same runs under the change sensor.
            found = dev.graphql(RUNS_BY_SENSOR, {"sensor": CHANGE_SENSOR})["data"]["runsOrError"]["results"]
            assert {r.run_id for r in runs} <= {r["runId"] for r in found}
    except BaseException:
        report.append("--- dagster dev log (tail) ---\n" + dev.log_tail())
        raise
    finally:
        leftovers = dev.stop()
        report.append(f"test took {time.monotonic() - t_test:.0f}s")
        with capsys.disabled():
            print("\n" + "\n".join(report))

    assert not leftovers, f"processes of the deployment survived the process-group kill: {leftovers}"
    for i, m in enumerate(measurements):
        assert m.latency_s < LATENCY_BOUND_S, f"change {i + 1}: {m.latency_s:.1f}s"
