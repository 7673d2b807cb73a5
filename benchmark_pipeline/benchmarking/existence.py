"""Does a benchmark already exist? MLflow (authoritative) first, then the disk cache.

Only a *complete* run counts in MLflow: FINISHED, not deleted, tagged ``benchmark_key``, and holding its
``benchmark.json``. FAILED, KILLED and RUNNING runs never block a rerun (a crashed benchmark leaves one of
those), and neither does a FINISHED run without ``benchmark.json`` (a cleanup script that closed a RUNNING
run). Runs logged by this project carry :data:`RESULT_LOGGED_TAG`, set once ``benchmark.json`` is in; a
FINISHED run without the tag counts only when its artifacts list ``benchmark.json`` (one request, and only
for such runs).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
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
#: Set on a benchmark run after ``benchmark.json`` was logged, before the run is set FINISHED.
RESULT_LOGGED_TAG = "benchmark_pipeline.result_logged"
#: A token made by the client for each ``create_run``, so that a retried create can be found and undone.
RUN_TOKEN_TAG = "benchmark_pipeline.run_token"
RESULT_ARTIFACT = "benchmark.json"
#: Page size of :func:`fetch_benchmark_runs`: the most MLflow's ``search_runs`` serves in one response
#: (``SEARCH_MAX_RESULTS_THRESHOLD``). A sensor tick then costs one search request up to 50,000 runs, instead
#: of one per 1,000 (the cost per run is the same either way; the round trips are not).
KEY_FETCH_PAGE_SIZE = 50_000


@dataclass(frozen=True)
class BenchmarkRunRecord:
    run_id: str
    status: str
    start_time: int | None
    result_logged: bool = False

    @property
    def complete(self) -> bool:
        return self.status == "FINISHED" and self.result_logged


def _has_result_artifact(client: MlflowClient, run_id: str) -> bool:
    return any(item.path == RESULT_ARTIFACT for item in client.list_artifacts(run_id))


def download_result(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The ``benchmark.json`` of a benchmark run."""
    with tempfile.TemporaryDirectory(prefix="benchmark_json_") as scratch:
        path = client.download_artifacts(run_id, RESULT_ARTIFACT, scratch)
        return json.loads(Path(path).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def first_finished_run(mlflow_client: MlflowClient, experiment_id: str, benchmark_key: str) -> Run | None:
    """The earliest complete (see the module docstring) run of ``benchmark_key`` in the experiment, or ``None``.

    The status is part of the server-side filter, so a FAILED run listed first cannot hide a FINISHED one.
    """
    parse_benchmark_key(benchmark_key)  # a validated key holds no quote, so it is safe inside the filter
    runs = mlflow_client.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.{BENCHMARK_KEY_TAG} = '{benchmark_key}' and attributes.status = 'FINISHED'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=20,
        order_by=["attributes.start_time ASC"],
    )
    for run in runs:
        if run.data.tags.get(RESULT_LOGGED_TAG) or _has_result_artifact(mlflow_client, run.info.run_id):
            return run
        logger.warning(
            "benchmark run %s of %s is FINISHED without %s; it does not count",
            run.info.run_id,
            benchmark_key,
            RESULT_ARTIFACT,
        )
    return None


def benchmark_exists_in_mlflow(
    benchmark_key: str, benchmark_experiment: dict[str, str], mlflow_client: MlflowClient
) -> bool:
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


def fetch_benchmark_runs(
    mlflow_client: MlflowClient, benchmark_experiment: dict[str, str]
) -> dict[str, list[BenchmarkRunRecord]]:
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
    runs = search_run_records(
        mlflow_client, experiment_id, f"tags.{BENCHMARK_KEY_TAG} LIKE '%'", ViewType.ACTIVE_ONLY, KEY_FETCH_PAGE_SIZE
    )
    for run in runs:
        key = run.tags.get(BENCHMARK_KEY_TAG)
        if key:
            grouped[key].append(
                BenchmarkRunRecord(run.run_id, run.status, run.start_time, bool(run.tags.get(RESULT_LOGGED_TAG)))
            )
    return dict(grouped)


def finished_keys(runs_by_key: dict[str, list[BenchmarkRunRecord]]) -> set[str]:
    """Keys with a complete run. A FINISHED run without :data:`RESULT_LOGGED_TAG` is left out here (its
    key is looked at again, one request, by :func:`first_finished_run` under the key's claim)."""
    return {key for key, runs in runs_by_key.items() if any(r.complete for r in runs)}


def stale_running_runs(
    runs_by_key: dict[str, list[BenchmarkRunRecord]], older_than_s: float, now_s: float | None = None
) -> list[tuple[str, str, float]]:
    """``(key, run_id, age_s)`` of RUNNING runs started more than ``older_than_s`` ago, oldest first: a
    benchmark process that died without closing its run (SIGKILL, a lost machine). They block nothing, but
    are worth a look: they are reported in the sensor's skip reason and the benchmark assets' metadata."""
    now_ms = (time.time() if now_s is None else now_s) * 1000
    stale = [
        (key, run.run_id, (now_ms - run.start_time) / 1000)
        for key, runs in runs_by_key.items()
        for run in runs
        if run.status == "RUNNING" and run.start_time is not None and now_ms - run.start_time > older_than_s * 1000
    ]
    return sorted(stale, key=lambda item: (-item[2], item[0]))


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
        assert mlflow_client is not None
        result = download_result(mlflow_client, run.info.run_id)
    if result is None:
        return None
    result["mlflow_run_id"] = run.info.run_id if run is not None else (cached or {}).get("mlflow", {}).get("run_id")
    result["mlflow_experiment_id"] = experiment_id
    result["mlflow_logged"] = run is not None
    return result
