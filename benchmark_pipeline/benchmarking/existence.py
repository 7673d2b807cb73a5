"""Does a benchmark already exist? MLflow (authoritative) first, then the disk cache.

Only a FINISHED, non-deleted run tagged ``benchmark_key`` counts in MLflow: FAILED, KILLED and RUNNING runs
never block a rerun (a crashed benchmark leaves one of those).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path, read_cache_entry
from benchmark_pipeline.benchmarking.keys import parse_benchmark_key
from benchmark_pipeline.tracking import resolve_experiment_id, search_run_records

logger = logging.getLogger(__name__)

BENCHMARK_KEY_TAG = "benchmark_key"
#: Page size of :func:`fetch_benchmark_runs`: the most MLflow's ``search_runs`` serves in one response
#: (``SEARCH_MAX_RESULTS_THRESHOLD``). A sensor tick then costs one search request up to 50,000 runs, instead
#: of one per 1,000 (the cost per run is the same either way; the round trips are not).
KEY_FETCH_PAGE_SIZE = 50_000


@dataclass(frozen=True)
class BenchmarkRunRecord:
    run_id: str
    status: str
    start_time: int | None


def first_finished_run(mlflow_client: MlflowClient, experiment_id: str, benchmark_key: str) -> Run | None:
    """The earliest FINISHED, active run tagged with ``benchmark_key`` in the experiment, or ``None``.

    The status is part of the server-side filter, so a FAILED run listed first cannot hide a FINISHED one.
    """
    parse_benchmark_key(benchmark_key)  # a validated key holds no quote, so it is safe inside the filter
    runs = mlflow_client.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.{BENCHMARK_KEY_TAG} = '{benchmark_key}' and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def benchmark_exists_in_mlflow(benchmark_key: str, benchmark_experiment: dict[str, str], mlflow_client: MlflowClient) -> bool:
    """True when the benchmark experiment holds a FINISHED, active run tagged with ``benchmark_key``."""
    parse_benchmark_key(benchmark_key)
    experiment_id = resolve_experiment_id(mlflow_client, benchmark_experiment)
    return experiment_id is not None and first_finished_run(mlflow_client, experiment_id, benchmark_key) is not None


def benchmark_exists_on_disk(benchmark_key: str, root_dir: Path, environment: str) -> Path | None:
    """The cache file of ``benchmark_key`` when it exists and is valid, else ``None``."""
    directory = cache_dir(root_dir, environment)
    return cache_path(directory, benchmark_key) if read_cache_entry(directory, benchmark_key) is not None else None


def benchmark_already_exists(
    benchmark_key: str,
    benchmark_experiment: dict[str, str],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> bool:
    """MLflow first (when a client is given), then the disk cache."""
    if mlflow_client is not None and benchmark_exists_in_mlflow(benchmark_key, benchmark_experiment, mlflow_client):
        return True
    return benchmark_exists_on_disk(benchmark_key, root_dir, environment) is not None


def fetch_benchmark_runs(mlflow_client: MlflowClient, benchmark_experiment: dict[str, str]) -> dict[str, list[BenchmarkRunRecord]]:
    """Every active run of the benchmark experiment that carries a ``benchmark_key`` tag, grouped by key.

    One paginated, tag-filtered search, whatever the number of keys: MLflow's filter language has no ``IN``
    or ``OR`` for tags, so checking N keys one query each would cost N round trips. Pages are as large as
    MLflow allows (:data:`KEY_FETCH_PAGE_SIZE`), so up to 50,000 runs take one request, and read as plain JSON
    (:func:`~benchmark_pipeline.tracking.search_run_records`), skipping the MLflow client's
    pure-Python protobuf parsing of every run's 60-odd metrics (see BENCHMARKS.md).
    """
    experiment_id = resolve_experiment_id(mlflow_client, benchmark_experiment)
    if experiment_id is None:
        return {}
    grouped: dict[str, list[BenchmarkRunRecord]] = defaultdict(list)
    runs = search_run_records(mlflow_client, experiment_id, f"tags.{BENCHMARK_KEY_TAG} LIKE '%'", ViewType.ACTIVE_ONLY, KEY_FETCH_PAGE_SIZE)
    for run in runs:
        key = run.tags.get(BENCHMARK_KEY_TAG)
        if key:
            grouped[key].append(BenchmarkRunRecord(run.run_id, run.status, run.start_time))
    return dict(grouped)


def finished_keys(runs_by_key: dict[str, list[BenchmarkRunRecord]]) -> set[str]:
    return {key for key, runs in runs_by_key.items() if any(r.status == "FINISHED" for r in runs)}


def find_existing_benchmark(
    benchmark_key: str,
    benchmark_experiment: dict[str, str],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> dict[str, Any] | None:
    """The stored result of ``benchmark_key`` — from the disk cache, else from the FINISHED MLflow run's
    ``benchmark.json`` — with ``mlflow_run_id`` and ``mlflow_experiment_id`` set when MLflow has it; ``None``
    when the benchmark does not exist."""
    run = None
    experiment_id = None
    if mlflow_client is not None:
        experiment_id = resolve_experiment_id(mlflow_client, benchmark_experiment)
        if experiment_id is not None:
            run = first_finished_run(mlflow_client, experiment_id, benchmark_key)
    cached = read_cache_entry(cache_dir(root_dir, environment), benchmark_key)
    result: dict[str, Any] | None = dict(cached["result"]) if cached else None
    if result is None and run is not None:
        with tempfile.TemporaryDirectory(prefix="benchmark_json_") as scratch:
            path = mlflow_client.download_artifacts(run.info.run_id, "benchmark.json", scratch)  # type: ignore[union-attr]
            result = json.loads(Path(path).read_text(encoding="utf-8"))
    if result is None:
        return None
    result["mlflow_run_id"] = run.info.run_id if run is not None else (cached or {}).get("mlflow", {}).get("run_id")
    result["mlflow_experiment_id"] = experiment_id
    result["mlflow_logged"] = run is not None
    return result
