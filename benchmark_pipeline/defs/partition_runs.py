"""One step over one partition or several: how the partitioned assets record what each partition produced.

The selection and benchmark assets take ``BackfillPolicy.single_run()``: a backfill (or ``dagster asset
materialize --partition-range``) of N partitions is one run and one step, which retrieves and benchmarks all N
at once. A one-partition run (the UI, ``--partition``, the sensor's and the schedules' runs) is the same step
with one key. Whatever the number, each partition gets its own record:

* **metadata**: ``context.add_asset_metadata(..., partition_key=...)``, which Dagster merges into that
  partition's materialization only (the ``benchmark_key`` entry ``benchmark_sensor`` reads, the tables of
  the UI);
* **asset checks**: the check specs are partitioned like their asset. One partition: an ``AssetCheckResult``,
  which Dagster records against the run's partition. Several: Dagster takes one ``AssetCheckResult`` per
  check and step, so the step yields each check's (valueless) output once and logs each partition's verdict
  as an ``AssetCheckEvaluation`` for that partition, pointing at that partition's materialization;
* **value**: the value itself for one partition, ``{partition key: value}`` for several (the shape Dagster's
  IO managers load several partitions in; :mod:`~benchmark_pipeline.defs.io_managers` stores it);
* **data version**: the benchmark key for one partition (so the UI's staleness follows the key exactly, see
  docs/workflow.md). Dagster 1.13 records a single data version for every partition of a step
  (dagster-io/dagster#34013, no per-partition data version for materializations), so a several-partition run
  records :func:`range_data_version`, a digest of all its partitions' keys: it changes when any of them does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData


@dataclass(frozen=True)
class PartitionResult:
    """What one partition of a step produced."""

    value: Any
    benchmark_key: str
    metadata: dict[str, Any]
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


def run_partition_keys(context: dg.AssetExecutionContext) -> list[str]:
    """The partitions this step materializes (one for a one-partition run)."""
    return list(context.partition_keys)


def input_by_partition(context: dg.AssetExecutionContext, value: Any) -> dict[str, Any]:
    """An upstream partitioned input as ``{partition key: value}``: Dagster passes the value itself when the
    step covers one partition and ``{partition key: value}`` when it covers several."""
    keys = run_partition_keys(context)
    if len(keys) == 1:
        return {keys[0]: value}
    by_key = {str(k): v for k, v in value.items()}
    return {key: by_key[str(key)] for key in keys}


def range_data_version(keys_by_partition: Mapping[str, str]) -> dg.DataVersion:
    """One data version for several partitions: a digest of every (partition, benchmark key) pair."""
    text = "\n".join(
        f"{partition}={key}" for partition, key in sorted((str(p), k) for p, k in keys_by_partition.items())
    )
    return dg.DataVersion(f"range-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:24]}")


def _latest_materializations(
    context: dg.AssetExecutionContext, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """This run's materialization of each partition (one event-log query), for the checks to point at."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[str(p) for p in partitions]),
        limit=len(partitions),
    ).records
    found: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    for record in records:  # newest first
        partition = record.partition_key
        if partition is not None and partition not in found and record.run_id == context.run_id:
            found[partition] = AssetCheckEvaluationTargetMaterializationData(
                run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
            )
    return found


def partition_outputs(context: dg.AssetExecutionContext, results: Mapping[str, PartitionResult]) -> Iterator[Any]:
    """Yield the step's output and checks, recording each partition's metadata, checks and version as its own."""
    for partition, result in results.items():
        context.add_asset_metadata(result.metadata, partition_key=partition)
    if len(results) == 1:
        (only,) = results.values()
        yield dg.Output(only.value, data_version=dg.DataVersion(only.benchmark_key))
        yield from only.checks
        return
    yield dg.Output(
        {str(partition): result.value for partition, result in results.items()},
        data_version=range_data_version({partition: result.benchmark_key for partition, result in results.items()}),
    )
    # The output's materializations are stored by now (Dagster handles an output before resuming the step).
    targets = _latest_materializations(context, list(results))
    selected = {
        spec.name: (output_name, spec) for output_name, spec in context.assets_def.check_specs_by_output_name.items()
    }
    for output_name, _spec in selected.values():
        yield dg.Output(
            None, output_name=output_name
        )  # the check's own (valueless) output, as an AssetCheckResult yields
    for partition, result in results.items():
        for check in result.checks:
            if check.check_name not in selected:
                continue
            context.log_event(
                dg.AssetCheckEvaluation(
                    asset_key=context.asset_key,
                    check_name=check.check_name or "",  # always set: the checks of this layer are named
                    passed=check.passed,
                    metadata=check.metadata,
                    severity=check.severity,
                    description=check.description,
                    blocking=selected[check.check_name][1].blocking,
                    partition=str(partition),
                    target_materialization_data=targets.get(str(partition)),
                )
            )
