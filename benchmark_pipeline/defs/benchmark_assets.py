"""Benchmark assets: ``benchmark_result`` (per backbone) and ``benchmark_result_per_variant``.

Both take ``BackfillPolicy.single_run()``: a run over N partitions is one step that asks MLflow once which of
the N keys exist (``filter_missing_benchmarks``) and benchmarks only the others. A partition whose benchmark
key already exists (FINISHED MLflow run or disk cache) runs nothing: it reports the stored result and its
MLflow run, with ``status: skipped``. Each partition's data version is its benchmark key (the key it was
built from; Dagster also records the ``best_trial`` version it read), see
:mod:`~benchmark_pipeline.defs.partition_runs`.
"""

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path
from benchmark_pipeline.benchmarking.existence import ResultStore
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.orchestrator import (
    BenchmarkFailedError,
    benchmark_best_trials,
    missing_benchmark_keys,
)
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.defs.checks import PROVIDER_MATCHES_CONFIG, provider_matches_result
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.metadata import benchmark_metadata, mlflow_run_url
from benchmark_pipeline.defs.partition_runs import PartitionResult, input_by_partition, partition_outputs
from benchmark_pipeline.defs.partitions import backbone_partitions, backbone_variant_partitions
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.layout import Layout
from benchmark_pipeline.tracking import reachable_client


def latency_chart_path(root_dir: Path, environment: str, benchmark_key: str) -> Path:
    """``{root_dir}/outputs/benchmarking/{environment}/charts/latency_<cache file name>.png``."""
    name = cache_path(cache_dir(root_dir, environment), benchmark_key).with_suffix(".png").name
    return Layout(root_dir, environment).charts_dir / f"latency_{name}"


#: A benchmark partition's ``status`` metadata (and log line): measured in this step, or its key already stored.
STATUS_BENCHMARKED = "benchmarked"
STATUS_SKIPPED = "skipped: already benchmarked"


def _nested(trials: Mapping[str, dict[str, Any]], per_variant: bool) -> dict[str, Any]:
    """The trials of the step's partitions in the core's shape: ``{backbone: info}`` or ``{backbone: {variant: info}}``."""
    shaped: dict[str, Any] = {}
    for info in trials.values():
        if per_variant:
            shaped.setdefault(info["backbone"], {})[info["variant"]] = info
        else:
            shaped[info["backbone"]] = info
    return shaped


def _run_missing(
    context: dg.AssetExecutionContext,
    config: PipelineConfig,
    client: Any,
    trials: Mapping[str, dict[str, Any]],
    keys: Mapping[str, str],
    per_variant: bool,
) -> dict[str, dict[str, Any]]:
    """``{benchmark key: result}`` for the step's trials (``keys``: partition → its benchmark key): one existence
    check for all of them, then the stored result of each existing key and a benchmark of each missing one."""
    missing_keys = missing_benchmark_keys(
        {keys[partition]: info for partition, info in trials.items()},
        benchmark_experiment=config.benchmark_experiment(),
        root_dir=config.root_dir,
        environment=config.environment,
        mlflow_client=client,
    )
    results: dict[str, dict[str, Any]] = {}
    todo: dict[str, dict[str, Any]] = {}
    lookup = reachable_client(client) if set(keys.values()) - missing_keys else None
    store = ResultStore.at(config.root_dir, config.environment, config.benchmark_experiment(), lookup)
    for partition, key in keys.items():
        found = None if key in missing_keys else store.find(key)
        if found is not None:
            results[key] = {**found, "status": "existing"}
        else:  # missing, or gone since the check (deleted meanwhile): benchmark_best_trials decides under its claim
            todo[partition] = trials[partition]
    if todo:
        results.update(_benchmark_todo(context, config, client, todo, per_variant))
    return results


def _benchmark_todo(
    context: dg.AssetExecutionContext,
    config: PipelineConfig,
    client: Any,
    todo: Mapping[str, dict[str, Any]],
    per_variant: bool,
) -> dict[str, dict[str, Any]]:
    # benchmark_best_trials checks each key again under its claim (another process may have just made it,
    # or a result cached during an MLflow outage is uploaded) and runs nothing when it finds one.
    try:
        ran = benchmark_best_trials(
            _nested(todo, per_variant),
            test_data_path=None,  # benchmark_config.test_data, else inputs from the model's signature
            root_dir=config.root_dir,
            environment=config.environment,
            data_config=config.data_config,
            hpo_config=config.hpo_config,
            benchmark_config=config.benchmark_config,
            benchmark_experiment=config.benchmark_experiment(),
            mlflow_client=client,
            hpo_output_dir=config.hpo_output_dir,
            progress=context.log.info,
        )
    except BenchmarkFailedError as error:
        raise dg.Failure(description=str(error)) from None
    return {result["benchmark_key"]: result for result in _iter_results(ran)}


def _stale_running_runs(store: ResultStore, config: PipelineConfig) -> dict[str, list[dict[str, Any]]]:
    """Per key, the benchmark runs RUNNING in MLflow for longer than ``benchmark_config.stale_running_after_s``
    (their process died without closing them; they block nothing): one search for the whole step."""
    if store.client is None:
        return {}
    older_than = config.benchmark.stale_running_after_s
    stale: dict[str, list[dict[str, Any]]] = {}
    for run in store.runs_by_key().stale_running(older_than):
        stale.setdefault(run.benchmark_key, []).append({"run_id": run.run_id, "running_for_s": round(run.age_s)})
    return stale


def _iter_results(results: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The result dicts of ``benchmark_best_trials`` (either shape; a result is recognised by its ``benchmark_key``)."""
    for entry in results.values():
        if "benchmark_key" in entry:
            yield entry
        else:
            yield from entry.values()


def _benchmark(
    context: dg.AssetExecutionContext,
    asset_name: str,
    selected: Any,
    settings: PipelineSettings,
    mlflow: MlflowResource,
    per_variant: bool,
) -> Iterator[Any]:
    config = settings.load()
    client = mlflow.client()
    trials = input_by_partition(context, selected)
    # Each partition's benchmark key, computed once here and carried to the existence check and the outputs.
    keys = {
        partition: key_for_trial(info, config.data_config, config.benchmark_config)
        for partition, info in trials.items()
    }
    with forward_core_logs(context):
        by_key = _run_missing(context, config, client, trials, keys, per_variant)
    # For the MLflow run links of results that do not name their experiment (none while MLflow is down).
    store = ResultStore.at(config.root_dir, config.environment, config.benchmark_experiment(), reachable_client(client))
    needs_id = any(r.get("mlflow_run_id") and not r.get("mlflow_experiment_id") for r in by_key.values())
    experiment_id = store.experiment_id() if needs_id else None
    stale = _stale_running_runs(store, config)
    device = config.benchmark.device
    outputs: dict[str, PartitionResult] = {}
    for partition, key in keys.items():
        result = by_key[key]
        status = STATUS_SKIPPED if result["status"] == "existing" else STATUS_BENCHMARKED
        context.log.info(f"benchmark {key}: {status} (MLflow run {result.get('mlflow_run_id')})")
        url = mlflow_run_url(
            mlflow.tracking_uri, result.get("mlflow_experiment_id") or experiment_id, result.get("mlflow_run_id")
        )
        chart_file = latency_chart_path(config.root_dir, config.environment, key)
        chart: Path | None = chart_file if result.get("measurements") else None
        if chart is not None and (result["status"] != "existing" or not chart_file.exists()):
            # A key's chart never changes, so an existing benchmark reuses the one drawn with it: a run that
            # benchmarks nothing imports no matplotlib either.
            from benchmark_pipeline.benchmarking.report import plot_latency

            chart = plot_latency(result, chart_file)
        metadata = benchmark_metadata(result, status, url, chart)
        if stale.get(key):
            metadata["stale_running_runs"] = dg.MetadataValue.json(stale[key])
        outputs[partition] = PartitionResult(
            value=result,
            benchmark_key=key,
            metadata=metadata,
            checks=[provider_matches_result(asset_name, result, device)],
        )
    yield from partition_outputs(context, outputs)


@dg.asset(
    group_name="benchmarks",
    partitions_def=backbone_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            PROVIDER_MATCHES_CONFIG,
            asset="benchmark_result",
            partitions_def=backbone_partitions,
            description="ERROR unless the benchmark ran on the configured device",
        )
    ],
    description="Inference latency of the backbone's best trial: ONNX Runtime and PyTorch across batch sizes.",
)
def benchmark_result(
    context: dg.AssetExecutionContext, best_trial: Any, settings: PipelineSettings, mlflow: MlflowResource
) -> Iterator[Any]:
    yield from _benchmark(context, "benchmark_result", best_trial, settings, mlflow, per_variant=False)


@dg.asset(
    group_name="benchmarks",
    partitions_def=backbone_variant_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    check_specs=[
        dg.AssetCheckSpec(
            PROVIDER_MATCHES_CONFIG,
            asset="benchmark_result_per_variant",
            partitions_def=backbone_variant_partitions,
            description="ERROR unless the benchmark ran on the configured device",
        )
    ],
    description="Inference latency of the best trial of one backbone × variant.",
)
def benchmark_result_per_variant(
    context: dg.AssetExecutionContext, best_trial_per_variant: Any, settings: PipelineSettings, mlflow: MlflowResource
) -> Iterator[Any]:
    yield from _benchmark(
        context, "benchmark_result_per_variant", best_trial_per_variant, settings, mlflow, per_variant=True
    )
