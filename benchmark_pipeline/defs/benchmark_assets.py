"""Benchmark assets: ``benchmark_result`` (per backbone) and ``benchmark_result_per_variant``.

A materialization whose benchmark key already exists (FINISHED MLflow run or disk cache) runs nothing: it
reports the stored result and its MLflow run, with ``status: skipped``.
"""


from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.orchestrator import BenchmarkFailedError, benchmark_best_trials
from benchmark_pipeline.benchmarking.report import plot_latency
from benchmark_pipeline.defs.checks import PROVIDER_MATCHES_CONFIG, provider_matches_result
from benchmark_pipeline.defs.log_forwarding import forward_core_logs
from benchmark_pipeline.defs.metadata import benchmark_metadata, mlflow_run_url
from benchmark_pipeline.defs.partitions import backbone_partitions, backbone_variant_partitions
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.tracking import resolve_experiment_id


def latency_chart_path(root_dir: Path, environment: str, benchmark_key: str) -> Path:
    """``{root_dir}/outputs/benchmarking/{environment}/charts/latency_<cache file name>.png``."""
    name = cache_path(cache_dir(root_dir, environment), benchmark_key).with_suffix(".png").name
    return cache_dir(root_dir, environment).parent / "charts" / f"latency_{name}"


def _benchmark(context: dg.AssetExecutionContext, asset_name: str, trial_info: dict[str, Any], settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    config = settings.load()
    client = mlflow.client()
    key = key_for_trial(trial_info, config.data_config, config.benchmark_config)
    with forward_core_logs(context):
        # benchmark_best_trials checks for an existing result under the key's claim (uploading one cached
        # during an MLflow outage) and runs nothing when it finds one.
        try:
            results = benchmark_best_trials(
                {trial_info["backbone"]: trial_info},
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
    result = results[trial_info["backbone"]]
    status = "skipped: already benchmarked" if result["status"] == "existing" else "benchmarked"
    context.log.info(f"benchmark {key}: {status} (MLflow run {result.get('mlflow_run_id')})")
    experiment_id = result.get("mlflow_experiment_id") or resolve_experiment_id(client, config.benchmark_experiment())
    url = mlflow_run_url(mlflow.tracking_uri, experiment_id, result.get("mlflow_run_id"))
    chart = plot_latency(result, latency_chart_path(config.root_dir, config.environment, key)) if result.get("measurements") else None
    yield dg.Output(result, metadata=benchmark_metadata(result, status, url, chart))
    yield provider_matches_result(asset_name, result, config.benchmark_config.get("device", "cpu"))


@dg.asset(
    group_name="benchmarks",
    partitions_def=backbone_partitions,
    check_specs=[dg.AssetCheckSpec(PROVIDER_MATCHES_CONFIG, asset="benchmark_result", description="ERROR unless the benchmark ran on the configured device")],
    description="Inference latency of the backbone's best trial: ONNX Runtime and PyTorch across batch sizes.",
)
def benchmark_result(context: dg.AssetExecutionContext, best_trial: dict[str, Any], settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    yield from _benchmark(context, "benchmark_result", best_trial, settings, mlflow)


@dg.asset(
    group_name="benchmarks",
    partitions_def=backbone_variant_partitions,
    check_specs=[dg.AssetCheckSpec(PROVIDER_MATCHES_CONFIG, asset="benchmark_result_per_variant", description="ERROR unless the benchmark ran on the configured device")],
    description="Inference latency of the best trial of one backbone × variant.",
)
def benchmark_result_per_variant(context: dg.AssetExecutionContext, best_trial_per_variant: dict[str, Any], settings: PipelineSettings, mlflow: MlflowResource) -> Iterator[Any]:
    yield from _benchmark(context, "benchmark_result_per_variant", best_trial_per_variant, settings, mlflow)
