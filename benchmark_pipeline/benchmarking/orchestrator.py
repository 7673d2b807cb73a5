"""Step 2 and 3 of the workflow: filter out what is already benchmarked, then benchmark exactly what is left.

Persistence order for one benchmark, so that nothing finished is lost and nothing partial looks finished:

1. an MLflow run is created RUNNING in the benchmark experiment, tagged with the ``benchmark_key``
   (a crash leaves it RUNNING or FAILED, and such runs never block a rerun);
2. the benchmark runs;
3. the result is written to the disk cache atomically, marked ``mlflow.logged = false``;
4. params, metrics, ``benchmark.json`` and the latency plot are logged, then the run is set FINISHED;
5. the cache entry is rewritten with ``mlflow.logged = true``.

If MLflow fails at step 1 or 4, the finished result stays in the cache, marked as not yet in MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.backends import ModelFileError
from benchmark_pipeline.benchmarking.cache import cache_dir, read_cache_entry, write_cache_entry
from benchmark_pipeline.benchmarking.existence import BENCHMARK_KEY_TAG, fetch_benchmark_runs, finished_keys
from benchmark_pipeline.benchmarking.keys import compute_config_hash, compute_data_fingerprint, key_for_trial
from benchmark_pipeline.benchmarking.report import plot_latency
from benchmark_pipeline.benchmarking.runner import BenchmarkResult, run_benchmark
from benchmark_pipeline.config import validate_benchmark_config
from benchmark_pipeline.hpo import contract
from benchmark_pipeline.selection.shapes import iter_trial_infos, map_trial_infos
from benchmark_pipeline.tracking import (
    MlflowUnavailableError,
    client_tracking_uri,
    default_artifact_location,
    ensure_reachable,
    get_or_create_experiment,
    make_client,
)

logger = logging.getLogger(__name__)

DEFAULT_BENCHMARK_EXPERIMENT = {"name": "benchmarks"}
ProgressCallback = Callable[[str], None]


class BenchmarkFailedError(RuntimeError):
    """One or more benchmarks failed; the others finished and were saved. ``failures`` maps key → error."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("benchmarks failed:\n" + "\n".join(f"  {k}: {v}" for k, v in self.failures.items()))


def _default_client(mlflow_client: MlflowClient | None) -> MlflowClient | None:
    if mlflow_client is not None:
        return mlflow_client
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return make_client(uri) if uri else None


def _reachable(client: MlflowClient | None) -> MlflowClient | None:
    if client is None:
        return None
    try:
        ensure_reachable(client_tracking_uri(client))
    except MlflowUnavailableError as error:
        logger.warning("%s; using the disk cache only", error)
        return None
    return client


def filter_missing_benchmarks(
    best_trials: dict[str, Any],
    benchmark_experiment: dict[str, str],
    benchmark_config: dict[str, Any],
    data_config: dict[str, Any],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> dict[str, Any]:
    """The trials of ``best_trials`` (either shape) whose benchmark does not exist yet, in the same shape.

    A benchmark exists when its key has a FINISHED, active run in ``benchmark_experiment`` or a valid disk
    cache entry. MLflow is asked once (one paginated, tag-filtered search), however many trials there are.
    An unreachable MLflow server is logged and the disk cache alone decides. When ``mlflow_client`` is None,
    ``$MLFLOW_TRACKING_URI`` is used if set.
    """
    validate_benchmark_config(benchmark_config)
    client = _reachable(_default_client(mlflow_client))
    in_mlflow = finished_keys(fetch_benchmark_runs(client, benchmark_experiment)) if client is not None else set()
    directory = cache_dir(root_dir, environment)

    def missing(trial_info: dict[str, Any]) -> dict[str, Any] | None:
        key = key_for_trial(trial_info, data_config, benchmark_config)
        if key in in_mlflow:
            logger.info("Skipping %s: a FINISHED MLflow run has key %s", trial_info["backbone"], key)
            return None
        if read_cache_entry(directory, key) is not None:
            logger.info("Skipping %s: the disk cache has key %s", trial_info["backbone"], key)
            return None
        return trial_info

    remaining = map_trial_infos(best_trials, missing)
    total = sum(1 for _ in iter_trial_infos(best_trials))
    kept = sum(1 for _ in iter_trial_infos(remaining))
    logger.info("%d of %d trial(s) need a benchmark; %d already benchmarked", kept, total, total - kept)
    return remaining


def _allowed_model_roots(root_dir: Path, environment: str, hpo_output_dir: Path | None) -> list[Path]:
    roots = [Path(root_dir) / "outputs" / "hpo" / environment]
    if hpo_output_dir is not None:
        roots.append(Path(hpo_output_dir))
    return [r.resolve() for r in roots]


def resolve_model_dir(
    trial_info: Mapping[str, Any], allowed_roots: Sequence[Path], client: MlflowClient | None, download_root: Path
) -> Path:
    """The folder holding ``model.onnx`` and ``model.pt`` for a trial.

    A local ``trial_dir`` is used only when it lies inside one of ``allowed_roots`` (model files are never
    read from elsewhere); otherwise the model is downloaded from the HPO run's MLflow artifacts.
    """
    folder = trial_info.get("trial_dir")
    if folder:
        resolved = Path(folder).resolve()
        if not any(resolved.is_relative_to(root) for root in allowed_roots):
            raise ModelFileError(f"trial_dir {folder} is outside the configured HPO folders {[str(r) for r in allowed_roots]}")
        if (resolved / contract.ONNX_FILE).is_file():
            return resolved
    run_id = trial_info.get("run_id")
    if run_id and client is not None:
        try:
            downloaded = client.download_artifacts(run_id, contract.MODEL_ARTIFACT_DIR, str(download_root))
        except (MlflowException, OSError) as error:
            raise ModelFileError(f"cannot download the model of HPO run {run_id}: {error}") from None
        return Path(downloaded)
    raise ModelFileError(
        f"no model for trial {trial_info.get('trial_id')} of {trial_info.get('backbone')}: "
        f"trial_dir={folder!r} has no {contract.ONNX_FILE} and no MLflow run id/client to download it from"
    )


def _flatten_config(config: Mapping[str, Any]) -> list[Param]:
    return [Param(k, ",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in sorted(config.items())]


def _result_metrics(result: BenchmarkResult) -> list[Metric]:
    timestamp = int(time.time() * 1000)
    metrics = [Metric(f"quality.{k}", float(v), timestamp, 0) for k, v in sorted(result.quality.items())]
    for m in result.measurements:
        prefix = f"{m['backend']}.bs{m['batch_size']}"
        for name in ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "stdev_ms", "cv", "throughput_samples_per_s", "peak_rss_mb"):
            metrics.append(Metric(f"{prefix}.{name}", float(m[name]), timestamp, 0))
    return metrics


def _log_result(client: MlflowClient, run_id: str, result: BenchmarkResult) -> None:
    client.log_batch(run_id, metrics=_result_metrics(result), params=_flatten_config(result.benchmark_config))
    with tempfile.TemporaryDirectory(prefix="benchmark_artifacts_") as scratch:
        json_path = Path(scratch) / "benchmark.json"
        json_path.write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
        client.log_artifact(run_id, str(json_path))
        client.log_artifact(run_id, str(plot_latency(result.to_dict(), Path(scratch) / "latency_vs_batch_size.png")))
    client.set_terminated(run_id, "FINISHED")


def benchmark_best_trials(
    best_trials: dict[str, Any],
    test_data_path: Path,
    root_dir: Path,
    environment: str,
    data_config: dict[str, Any],
    hpo_config: dict[str, Any],
    benchmark_config: dict[str, Any],
    benchmark_experiment: dict[str, str] | None = None,
    mlflow_client: MlflowClient | None = None,
    hpo_output_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Benchmark exactly the trials given (pre-retrieved and, usually, filtered), in either shape.

    Returns the same shape, each entry the result dict (``BenchmarkResult.to_dict()`` plus ``status``,
    ``mlflow_run_id``, ``mlflow_logged`` and ``cache_path``). When ``mlflow_client`` is None,
    ``$MLFLOW_TRACKING_URI`` is used if set; with no MLflow at all, results go to the disk cache only.
    A failing benchmark does not stop the others: after all ran, :class:`BenchmarkFailedError` lists the
    failures (finished results are saved before it is raised). ``hpo_config`` is accepted for the design
    document's signature.
    """
    validate_benchmark_config(benchmark_config)
    experiment = benchmark_experiment or DEFAULT_BENCHMARK_EXPERIMENT
    client = _reachable(_default_client(mlflow_client))
    experiment_id = None
    if client is not None:
        experiment_id = get_or_create_experiment(client, experiment["name"], default_artifact_location(client_tracking_uri(client), Path(root_dir))) if not experiment.get("id") else experiment["id"]
    directory = cache_dir(root_dir, environment)
    allowed_roots = _allowed_model_roots(Path(root_dir), environment, hpo_output_dir)
    failures: dict[str, str] = {}

    def benchmark_one(trial_info: dict[str, Any]) -> dict[str, Any] | None:
        key = key_for_trial(trial_info, data_config, benchmark_config)
        run_id = None
        if client is not None and experiment_id is not None:
            try:
                run_id = client.create_run(
                    experiment_id,
                    run_name=f"benchmark_{trial_info['backbone']}_{trial_info.get('variant') or 'default'}",
                    tags={
                        BENCHMARK_KEY_TAG: key,
                        contract.TAG_BACKBONE: trial_info["backbone"],
                        contract.TAG_VARIANT: trial_info.get("variant") or "default",
                        contract.TAG_TRIAL_KEY_HASH: trial_info["trial_id"],
                        "code.hpo_run_id": trial_info.get("run_id") or "unknown",
                        contract.TAG_DATA_FINGERPRINT: compute_data_fingerprint(data_config),
                        "code.benchmark_config_hash": compute_config_hash(benchmark_config),
                    },
                ).info.run_id
            except (MlflowException, OSError) as error:
                logger.warning("cannot create the MLflow run for %s (%s); the result will be cached on disk only", key, error)
        try:
            with tempfile.TemporaryDirectory(prefix="benchmark_model_") as download_root:
                model_dir = resolve_model_dir(trial_info, allowed_roots, client, Path(download_root))
                result = run_benchmark(key, trial_info, model_dir, Path(test_data_path), data_config, benchmark_config, progress)
        except Exception as error:
            failures[key] = f"{type(error).__name__}: {error}"
            logger.error("benchmark %s failed: %s", key, failures[key])
            if run_id is not None:
                try:
                    client.set_tag(run_id, "error", failures[key][:4000])
                    client.set_terminated(run_id, "FAILED")
                except (MlflowException, OSError):
                    pass
            return None
        cache_file = write_cache_entry(directory, key, result.to_dict(), run_id, mlflow_logged=False)
        logged = False
        if run_id is not None:
            try:
                _log_result(client, run_id, result)
                logged = True
            except (MlflowException, OSError) as error:
                logger.warning("benchmark %s finished but could not be logged to MLflow (%s); it stays in %s", key, error, cache_file)
        if logged:
            write_cache_entry(directory, key, result.to_dict(), run_id, mlflow_logged=True)
        return {**result.to_dict(), "status": "benchmarked", "mlflow_run_id": run_id, "mlflow_logged": logged, "cache_path": str(cache_file)}

    results = map_trial_infos(best_trials, benchmark_one)
    if failures:
        raise BenchmarkFailedError(failures)
    return results
