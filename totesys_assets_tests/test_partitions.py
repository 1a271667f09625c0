"""Per-partition metadata of a range run: the one-step helper records what Dagster's own call does."""

from __future__ import annotations

import dagster as dg
import pytest

from totesys_assets import partitions
from totesys_assets.partitions import add_partition_metadata

_days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-11")
RANGE = {
    "dagster/asset_partition_range_start": "2024-01-02",
    "dagster/asset_partition_range_end": "2024-01-09",
}


def _counts(context) -> dict[str, dict[str, int]]:
    return {
        day: {"dagster/row_count": i * 10, "day_index": i} for i, day in enumerate(context.partition_keys)
    }


@dg.asset(partitions_def=_days, backfill_policy=dg.BackfillPolicy.single_run())
def with_helper(context) -> dg.MaterializeResult:
    add_partition_metadata(context, _counts(context))
    return dg.MaterializeResult(metadata={"run_total": 1})


@dg.asset(partitions_def=_days, backfill_policy=dg.BackfillPolicy.single_run())
def with_public_call(context) -> dg.MaterializeResult:
    for day, metadata in _counts(context).items():
        context.add_asset_metadata(metadata, partition_key=day)
    return dg.MaterializeResult(metadata={"run_total": 1})


@dg.asset(partitions_def=_days, backfill_policy=dg.BackfillPolicy.single_run())
def with_a_day_outside_the_run(context) -> None:
    add_partition_metadata(context, {"2024-01-10": {"dagster/row_count": 1}})


def _per_partition(asset: dg.AssetsDefinition) -> dict[str, dict]:
    result = dg.materialize([asset], tags=RANGE)
    assert result.success
    return {
        m.partition: {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(asset.op.name)
    }


def test_helper_records_each_days_metadata_like_the_public_call():
    ours, public = _per_partition(with_helper), _per_partition(with_public_call)
    assert len(ours) == 8 and ours == public
    assert ours["2024-01-02"] == {"dagster/row_count": 0, "day_index": 0, "run_total": 1}
    assert ours["2024-01-09"]["dagster/row_count"] == 70


def test_helper_falls_back_to_the_public_call_if_dagsters_internals_change(monkeypatch):
    class NotTheAccumulator:
        pass

    monkeypatch.setattr(partitions, "OutputMetadataAccumulator", NotTheAccumulator)
    assert _per_partition(with_helper) == _per_partition(with_public_call)


def test_helper_refuses_a_partition_the_run_does_not_target():
    with pytest.raises(dg.DagsterInvariantViolationError, match=r"with_a_day_outside_the_run.*2024-01-10"):
        dg.materialize([with_a_day_outside_the_run], tags=RANGE)


def test_partition_tags_make_a_single_run_over_the_days_or_one_partition():
    from totesys_assets.partitions import partition_tags

    @dg.asset(partitions_def=_days, backfill_policy=dg.BackfillPolicy.single_run())
    def days_seen(context) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"days": ",".join(context.partition_keys)})

    assert partition_tags("2024-01-02", "2024-01-09") == RANGE  # the tags Dagster's backfills use
    for first, last in (("2024-01-02", "2024-01-04"), ("2024-01-05", "2024-01-05")):
        result = dg.materialize([days_seen], tags=partition_tags(first, last))
        (event, *rest) = result.asset_materializations_for_node("days_seen")
        assert event.metadata["days"].value.split(",")[0] == first
        assert len(rest) + 1 == len(event.metadata["days"].value.split(","))
