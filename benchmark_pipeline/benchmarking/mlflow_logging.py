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
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.benchmarking.cache import (
    cache_path,
    load_cache_file,
    read_cache_entry,
    trusted_entry,
    write_cache_entry,
)
from benchmark_pipeline.benchmarking.claims import try_benchmark_claim
from benchmark_pipeline.benchmarking.existence import (
    BENCHMARK_KEY_TAG,
    RESULT_ARTIFACT,
    RESULT_LOGGED_TAG,
    RUN_TOKEN_TAG,
    ResultStore,
    download_result,
)
from benchmark_pipeline.benchmarking.keys import parse_benchmark_key
from benchmark_pipeline.benchmarking.report import plot_latency
from benchmark_pipeline.tracking import MlflowUnavailableError, ensure_reachable

logger = logging.getLogger(__name__)

_STAT_NAMES = (
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "stdev_ms",
    "cv",
    "throughput_samples_per_s",
    "peak_rss_mb",
)


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


def _runs_with_token(client: MlflowClient, experiment_id: str, token: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_TOKEN_TAG}` = '{token}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    return sorted(r.info.run_id for r in runs)


def start_benchmark_run(client: MlflowClient, experiment_id: str, benchmark_key: str, hpo_run_id: str | None) -> str:
    """Create the key's RUNNING run, exactly once.

    ``create_run`` is not idempotent: when a connection drops after the server created the run, MLflow's
    client retries and the server creates a second one, left RUNNING forever. So each attempt carries a
    token made here (tag :data:`RUN_TOKEN_TAG`); after the call, and before any retry of ours, the runs with
    that token are looked up: one is kept (the earliest), the others are deleted.
    """
    parts = parse_benchmark_key(benchmark_key)
    token = uuid.uuid4().hex
    tags = {**benchmark_run_tags(benchmark_key, hpo_run_id), RUN_TOKEN_TAG: token}
    failure: Exception | None = None
    created: str | None = None
    try:
        created = str(
            client.create_run(
                experiment_id, run_name=f"benchmark_{parts.backbone}_{parts.variant}", tags=tags
            ).info.run_id
        )
    except (MlflowException, OSError) as error:
        failure = error  # the server may still have created it: look before giving up
    existing = _runs_with_token(client, experiment_id, token)
    if not existing:
        if created is None:
            assert failure is not None
            raise failure
        return created
    keep = created if created in existing else existing[0]
    for orphan in (run_id for run_id in existing if run_id != keep):
        logger.warning("deleting orphan benchmark run %s of %s (a retried create_run made it)", orphan, benchmark_key)
        client.delete_run(orphan)
    return keep


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
    """Log params, metrics, ``benchmark.json`` and the latency plot, tag the run :data:`RESULT_LOGGED_TAG`
    (``benchmark.json`` is in), then set it FINISHED (last)."""
    client.log_batch(run_id, metrics=_metrics(result), params=_params(result["benchmark_config"]))
    with tempfile.TemporaryDirectory(prefix="benchmark_artifacts_") as scratch:
        json_path = Path(scratch) / RESULT_ARTIFACT
        json_path.write_text(json.dumps(dict(result), indent=2, sort_keys=True), encoding="utf-8")
        client.log_artifact(run_id, str(json_path))
        client.log_artifact(run_id, str(plot_latency(result, Path(scratch) / "latency_vs_batch_size.png")))
    client.set_tag(run_id, RESULT_LOGGED_TAG, "true")
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


def upload_pending(
    client: MlflowClient, experiment_id: str, cache_directory: Path, benchmark_key: str, *, verify_logged: bool = False
) -> str | None:
    """Upload one cached result not in MLflow; the caller holds the key's claim. Returns the FINISHED run id
    (``None`` when there was nothing to upload).

    Uploaded: entries marked ``mlflow.logged: false``; with ``verify_logged``, entries marked logged too when
    MLflow has no complete run of the key (a restored backup, a deleted run). A complete run already there
    for a pending entry is adopted instead of logging twice, and the cache is rewritten with that run's
    ``benchmark.json`` (MLflow is authoritative: one key, one set of numbers); the result's own RUNNING run
    (created before the outage) is completed; otherwise a new run is created.
    """
    entry = read_cache_entry(cache_directory, benchmark_key)
    logged = entry is not None and entry["mlflow"]["logged"]
    if entry is None or (logged and not verify_logged):
        return None
    result = entry["result"]
    finished = ResultStore(cache_directory, {"id": experiment_id}, client).finished_run(benchmark_key)
    if finished is not None and logged:
        return None  # MLflow has it, as the cache says
    if finished is not None:
        run_id = finished.info.run_id
        stored = download_result(client, run_id)
        if stored != result:
            logger.warning(
                "benchmark %s: MLflow run %s already holds a result; the cached one (measured again) is replaced by it",
                benchmark_key,
                run_id,
            )
        result = stored
    else:
        run_id = _reusable_run(client, entry["mlflow"].get("run_id"))
        if run_id is None:
            run_id = start_benchmark_run(client, experiment_id, benchmark_key, result.get("hpo_run_id"))
        log_benchmark_result(client, run_id, result)
    write_cache_entry(cache_directory, benchmark_key, result, run_id, mlflow_logged=True)
    logger.info("uploaded cached benchmark %s to MLflow run %s (no benchmark was run)", benchmark_key, run_id)
    return str(run_id)


def _is_pending(entry: Mapping[str, Any] | None) -> bool:
    return entry is not None and not entry.get("mlflow", {}).get("logged")


def pending_keys(cache_directory: Path) -> list[str]:
    """Keys of trusted cache entries that are not in MLflow yet (sorted); each file is read once."""
    keys = []
    for path in sorted(cache_directory.glob("benchmark_*.json")):
        try:
            payload = load_cache_file(path)
            key = payload["benchmark_key"]
            # Trusted only as read_cache_entry would: a valid key whose own file this is, complete.
            valid = cache_path(cache_directory, key) == path and trusted_entry(path, key, payload) is not None
        except (ValueError, KeyError, TypeError):
            continue  # reported when read for that key; never trusted
        if valid and _is_pending(payload):
            keys.append(key)
    return keys


def upload_pending_benchmarks(
    client: MlflowClient | None,
    experiment_id: str | None,
    cache_directory: Path,
    keys: Iterable[str] | None = None,
    *,
    verify_logged: Iterable[str] = (),
) -> list[str]:
    """Upload every pending cached result (or, reading only their entries, those of ``keys``), and the
    results of ``verify_logged`` that MLflow lacks although the cache says logged (see :func:`upload_pending`);
    returns the uploaded keys.

    Each upload holds the key's claim; a key whose claim another process holds is skipped (that process is
    benchmarking or uploading it). Does nothing when MLflow is unreachable (results stay pending).
    """
    to_verify = set(verify_logged)
    if client is None or experiment_id is None:
        return []
    if keys is None:
        candidates = pending_keys(cache_directory)
    else:
        candidates = sorted(k for k in set(keys) if _is_pending(read_cache_entry(cache_directory, k)))
    candidates = sorted(set(candidates) | to_verify)
    if not candidates:
        return []
    try:
        ensure_reachable(client.tracking_uri)
    except MlflowUnavailableError as error:
        logger.warning("%d cached benchmark(s) wait for MLflow: %s", len(candidates), error)
        return []
    uploaded = []
    for key in candidates:
        try:
            with try_benchmark_claim(cache_directory, key) as claimed:
                if not claimed:
                    logger.info("cached benchmark %s: another process holds its claim; it uploads it", key)
                    continue
                if upload_pending(client, experiment_id, cache_directory, key, verify_logged=key in to_verify):
                    uploaded.append(key)
        except (MlflowException, OSError) as error:
            logger.warning("could not upload cached benchmark %s: %s", key, error)
        except (KeyError, TypeError, ValueError) as error:
            logger.warning(
                "cached benchmark %s is not a complete result (%s: %s); not uploaded", key, type(error).__name__, error
            )
    return uploaded
