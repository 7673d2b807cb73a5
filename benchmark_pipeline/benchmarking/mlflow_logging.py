"""Benchmark runs in MLflow: creating them, logging a finished result, and uploading results that were
cached while MLflow was unreachable.

Everything is logged from the result *dict* (what the disk cache holds), so an upload after an outage logs
exactly what the benchmark measured, without benchmarking again.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.cache import cache_path, read_cache_entry, write_cache_entry
from benchmark_pipeline.benchmarking.existence import BENCHMARK_KEY_TAG, first_finished_run
from benchmark_pipeline.benchmarking.keys import parse_benchmark_key
from benchmark_pipeline.benchmarking.report import plot_latency
from benchmark_pipeline import contract
from benchmark_pipeline.tracking import MlflowUnavailableError, client_tracking_uri, ensure_reachable

logger = logging.getLogger(__name__)

_STAT_NAMES = ("mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "stdev_ms", "cv", "throughput_samples_per_s", "peak_rss_mb")


def benchmark_run_tags(benchmark_key: str, hpo_run_id: str | None) -> dict[str, str]:
    """Tags of a benchmark run, all derived from the key (so a cached result can be re-tagged exactly)."""
    parts = parse_benchmark_key(benchmark_key)
    return {
        BENCHMARK_KEY_TAG: benchmark_key,
        contract.TAG_BACKBONE: parts.backbone,
        contract.TAG_VARIANT: parts.variant,
        contract.TAG_TRIAL_KEY_HASH: parts.trial_id,
        "code.hpo_run_id": hpo_run_id or parts.run_id,
        contract.TAG_DATA_FINGERPRINT: parts.data_fingerprint,
        "code.benchmark_config_hash": parts.benchmark_config_hash,
    }


def start_benchmark_run(client: MlflowClient, experiment_id: str, benchmark_key: str, hpo_run_id: str | None) -> str:
    parts = parse_benchmark_key(benchmark_key)
    run = client.create_run(experiment_id, run_name=f"benchmark_{parts.backbone}_{parts.variant}", tags=benchmark_run_tags(benchmark_key, hpo_run_id))
    return str(run.info.run_id)


def _params(config: Mapping[str, Any]) -> list[Param]:
    return [Param(k, ",".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in sorted(config.items())]


def _metrics(result: Mapping[str, Any]) -> list[Metric]:
    timestamp = int(time.time() * 1000)
    metrics = [Metric(f"quality.{k}", float(v), timestamp, 0) for k, v in sorted(result["quality"].items())]
    for m in result["measurements"]:
        prefix = f"{m['backend']}.bs{m['batch_size']}"
        metrics.extend(Metric(f"{prefix}.{name}", float(m[name]), timestamp, 0) for name in _STAT_NAMES)
    return metrics


def log_benchmark_result(client: MlflowClient, run_id: str, result: Mapping[str, Any]) -> None:
    """Log params, metrics, ``benchmark.json`` and the latency plot, then set the run FINISHED (last)."""
    client.log_batch(run_id, metrics=_metrics(result), params=_params(result["benchmark_config"]))
    with tempfile.TemporaryDirectory(prefix="benchmark_artifacts_") as scratch:
        json_path = Path(scratch) / "benchmark.json"
        json_path.write_text(json.dumps(dict(result), indent=2, sort_keys=True), encoding="utf-8")
        client.log_artifact(run_id, str(json_path))
        client.log_artifact(run_id, str(plot_latency(result, Path(scratch) / "latency_vs_batch_size.png")))
    client.set_terminated(run_id, "FINISHED")


def _reusable_run(client: MlflowClient, run_id: str | None) -> str | None:
    """The run created for this result before MLflow failed, when it is still active and RUNNING: the
    upload completes it (re-logging identical params and metrics is harmless) rather than leaving it open
    beside a second run."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    return run_id if run.info.status == "RUNNING" and run.info.lifecycle_stage == "active" else None


def upload_pending(client: MlflowClient, experiment_id: str, cache_directory: Path, benchmark_key: str) -> str | None:
    """Upload one cached result marked ``mlflow.logged: false``; returns the FINISHED run id (``None`` when
    there was nothing pending). A run already FINISHED for the key is adopted instead of logging twice; the
    result's own RUNNING run (created before the outage) is completed; otherwise a new run is created."""
    entry = read_cache_entry(cache_directory, benchmark_key)
    if entry is None or entry.get("mlflow", {}).get("logged"):
        return None
    result = entry["result"]
    finished = first_finished_run(client, experiment_id, benchmark_key)
    run_id = finished.info.run_id if finished is not None else None
    if run_id is None:
        run_id = _reusable_run(client, entry.get("mlflow", {}).get("run_id"))
        if run_id is None:
            run_id = start_benchmark_run(client, experiment_id, benchmark_key, result.get("hpo_run_id"))
        log_benchmark_result(client, run_id, result)
    write_cache_entry(cache_directory, benchmark_key, result, run_id, mlflow_logged=True)
    logger.info("uploaded cached benchmark %s to MLflow run %s (no benchmark was run)", benchmark_key, run_id)
    return run_id


def _is_pending(entry: Mapping[str, Any] | None) -> bool:
    return entry is not None and not entry.get("mlflow", {}).get("logged")


def pending_keys(cache_directory: Path) -> list[str]:
    """Keys of valid cache entries that are not in MLflow yet (sorted)."""
    keys = []
    for path in sorted(cache_directory.glob("benchmark_*.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            key = payload["benchmark_key"]
            # Trusted only as read_cache_entry would: a valid key whose own file this is, holding a result.
            valid = cache_path(cache_directory, key) == path and "result" in payload
        except (OSError, ValueError, KeyError, TypeError):
            continue  # reported when read for that key; never trusted
        if valid and _is_pending(payload):
            keys.append(key)
    return keys


def upload_pending_benchmarks(client: MlflowClient | None, experiment_id: str | None, cache_directory: Path, keys: Iterable[str] | None = None) -> list[str]:
    """Upload every pending cached result (or, reading only their entries, those of ``keys``); returns the
    uploaded keys.

    Does nothing when MLflow is unreachable (the results stay pending for the next attempt).
    """
    if client is None or experiment_id is None:
        return []
    if keys is None:
        candidates = pending_keys(cache_directory)
    else:
        candidates = sorted(k for k in set(keys) if _is_pending(read_cache_entry(cache_directory, k)))
    if not candidates:
        return []
    try:
        ensure_reachable(client_tracking_uri(client))
    except MlflowUnavailableError as error:
        logger.warning("%d cached benchmark(s) wait for MLflow: %s", len(candidates), error)
        return []
    uploaded = []
    for key in candidates:
        try:
            if upload_pending(client, experiment_id, cache_directory, key):
                uploaded.append(key)
        except (MlflowException, OSError) as error:
            logger.warning("could not upload cached benchmark %s: %s", key, error)
        except (KeyError, TypeError, ValueError) as error:
            logger.warning("cached benchmark %s is not a complete result (%s: %s); not uploaded", key, type(error).__name__, error)
    return uploaded
