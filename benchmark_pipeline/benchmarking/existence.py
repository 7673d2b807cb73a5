"""Does a benchmark already exist? MLflow (authoritative) first, then the disk cache.

Only a *complete* run counts in MLflow: FINISHED, not deleted, tagged ``benchmark_key``, and holding its
``benchmark.json``. FAILED, KILLED and RUNNING runs never block a rerun (a crashed benchmark leaves one of
those), and neither does a FINISHED run without ``benchmark.json`` (a cleanup script that closed a RUNNING
run). Runs logged by this project carry :data:`RESULT_LOGGED_TAG`, set once ``benchmark.json`` is in; a
FINISHED run without the tag counts only when its artifacts list ``benchmark.json`` (one request, and only
for such runs).

:class:`ResultStore` is the one existence API: the benchmark experiment and the disk cache of one root and
environment, asked for one key (:meth:`~ResultStore.in_mlflow`, :meth:`~ResultStore.cached_file`,
:meth:`~ResultStore.exists`, :meth:`~ResultStore.find`) or for every key at once (:meth:`~ResultStore.runs_by_key`:
one paginated fetch, whose :class:`RunsByKey` says which keys are done and which runs are stale). The
module-level functions are the public API's thin wrappers around it (the design document's signatures).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
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
#: Page size of :meth:`ResultStore.runs_by_key`: the most MLflow's ``search_runs`` serves in one response
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


@dataclass(frozen=True)
class StaleRun:
    """A RUNNING benchmark run older than the threshold: its process died without closing it."""

    benchmark_key: str
    run_id: str
    age_s: float


class RunsByKey(dict[str, list[BenchmarkRunRecord]]):
    """Every active run of the benchmark experiment that carries a ``benchmark_key`` tag, grouped by key."""

    def finished_keys(self) -> set[str]:
        """Keys with a complete run. A FINISHED run without :data:`RESULT_LOGGED_TAG` is left out here (its key
        is looked at again, one request, by :meth:`ResultStore.finished_run` under the key's claim)."""
        return {key for key, runs in self.items() if any(r.complete for r in runs)}

    def stale_running(self, older_than_s: float, now_s: float | None = None) -> list[StaleRun]:
        """RUNNING runs started more than ``older_than_s`` ago, oldest first: a benchmark process that died
        without closing its run (SIGKILL, a lost machine). They block nothing, but are worth a look: they are
        reported in the sensor's skip reason and the benchmark assets' metadata."""
        now_ms = (time.time() if now_s is None else now_s) * 1000
        stale = [
            StaleRun(key, run.run_id, (now_ms - run.start_time) / 1000)
            for key, runs in self.items()
            for run in runs
            if run.status == "RUNNING" and run.start_time is not None and now_ms - run.start_time > older_than_s * 1000
        ]
        return sorted(stale, key=lambda item: (-item.age_s, item.benchmark_key))


def download_result(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """The ``benchmark.json`` of a benchmark run."""
    with tempfile.TemporaryDirectory(prefix="benchmark_json_") as scratch:
        path = client.download_artifacts(run_id, RESULT_ARTIFACT, scratch)
        return json.loads(Path(path).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ResultStore:
    """The stored benchmark results of one root and environment: the benchmark experiment in MLflow
    (authoritative; asked only when a client is given) and the disk cache folder.

    The experiment reference (``{"id": ...}`` or ``{"name": ...}``) is resolved at each question, as a
    deleted or newly created experiment changes the answer; a name that no active experiment has means
    nothing is in MLflow.
    """

    cache_directory: Path
    experiment: Mapping[str, str]
    client: MlflowClient | None = None

    @classmethod
    def at(
        cls, root_dir: Path, environment: str, experiment: Mapping[str, str], client: MlflowClient | None = None
    ) -> ResultStore:
        return cls(cache_dir(root_dir, environment), experiment, client)

    def experiment_id(self) -> str | None:
        """The benchmark experiment's id, or ``None`` (no client, or no such active experiment)."""
        if self.client is None:
            return None
        return resolve_experiment_id(self.client, dict(self.experiment))

    def finished_run(self, benchmark_key: str, experiment_id: str | None = None) -> Run | None:
        """The earliest complete (see the module docstring) run of ``benchmark_key``, or ``None``.

        The status is part of the server-side filter, so a FAILED run listed first cannot hide a FINISHED one.
        """
        experiment_id = experiment_id or self.experiment_id()
        if self.client is None or experiment_id is None:
            return None
        parse_benchmark_key(benchmark_key)  # a validated key holds no quote, so it is safe inside the filter
        runs = self.client.search_runs(
            experiment_ids=[experiment_id],
            filter_string=f"tags.{BENCHMARK_KEY_TAG} = '{benchmark_key}' and attributes.status = 'FINISHED'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=20,
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            if run.data.tags.get(RESULT_LOGGED_TAG) or self._has_result_artifact(run.info.run_id):
                return run
            logger.warning(
                "benchmark run %s of %s is FINISHED without %s; it does not count",
                run.info.run_id,
                benchmark_key,
                RESULT_ARTIFACT,
            )
        return None

    def _has_result_artifact(self, run_id: str) -> bool:
        assert self.client is not None
        return any(item.path == RESULT_ARTIFACT for item in self.client.list_artifacts(run_id))

    def in_mlflow(self, benchmark_key: str) -> bool:
        """True when the benchmark experiment holds a complete, active run tagged with ``benchmark_key``."""
        parse_benchmark_key(benchmark_key)
        return self.finished_run(benchmark_key) is not None

    def cached_entry(self, benchmark_key: str) -> dict[str, Any] | None:
        """The trusted cache entry of ``benchmark_key`` (see :mod:`~benchmark_pipeline.benchmarking.cache`)."""
        return read_cache_entry(self.cache_directory, benchmark_key)

    def cached_file(self, benchmark_key: str) -> Path | None:
        """The cache file of ``benchmark_key`` when it exists and is valid, else ``None``."""
        found = self.cached_entry(benchmark_key) is not None
        return cache_path(self.cache_directory, benchmark_key) if found else None

    def exists(self, benchmark_key: str) -> bool:
        """MLflow first (when a client is given), then the disk cache."""
        if self.client is not None and self.in_mlflow(benchmark_key):
            return True
        return self.cached_file(benchmark_key) is not None

    def runs_by_key(self) -> RunsByKey:
        """Every active benchmark run, grouped by key: one paginated, tag-filtered search, whatever the number
        of keys (MLflow's filter language has no ``IN`` or ``OR`` for tags, so checking N keys one query each
        would cost N round trips). Pages are as large as MLflow allows (:data:`KEY_FETCH_PAGE_SIZE`), so up to
        50,000 runs take one request, and read as plain JSON (:func:`~benchmark_pipeline.tracking.search_run_records`),
        skipping the MLflow client's pure-Python protobuf parsing of every run's 60-odd metrics (BENCHMARKS.md).
        Empty without a client."""
        experiment_id = self.experiment_id()
        grouped = RunsByKey()
        if self.client is None or experiment_id is None:
            return grouped
        runs = search_run_records(
            self.client,
            experiment_id,
            f"tags.{BENCHMARK_KEY_TAG} LIKE '%'",
            ViewType.ACTIVE_ONLY,
            KEY_FETCH_PAGE_SIZE,
        )
        for run in runs:
            key = run.tags.get(BENCHMARK_KEY_TAG)
            if key:
                record = BenchmarkRunRecord(
                    run.run_id, run.status, run.start_time, bool(run.tags.get(RESULT_LOGGED_TAG))
                )
                grouped.setdefault(key, []).append(record)
        return grouped

    def find(self, benchmark_key: str) -> dict[str, Any] | None:
        """The stored result of ``benchmark_key`` — from the disk cache, else from the complete MLflow run's
        ``benchmark.json`` — with ``mlflow_run_id`` and ``mlflow_experiment_id`` set when MLflow has it;
        ``None`` when the benchmark does not exist."""
        experiment_id = self.experiment_id()
        run = self.finished_run(benchmark_key, experiment_id) if experiment_id is not None else None
        cached = self.cached_entry(benchmark_key)
        result: dict[str, Any] | None = dict(cached["result"]) if cached else None
        if result is None and run is not None:
            assert self.client is not None
            result = download_result(self.client, run.info.run_id)
        if result is None:
            return None
        result["mlflow_run_id"] = run.info.run_id if run is not None else (cached or {}).get("mlflow", {}).get("run_id")
        result["mlflow_experiment_id"] = experiment_id
        result["mlflow_logged"] = run is not None
        return result


# ------------------------------------------------------------ the public API's wrappers (design document)


def _mlflow_only(benchmark_experiment: Mapping[str, str], mlflow_client: MlflowClient) -> ResultStore:
    """A store for questions to MLflow alone: its cache folder is never read."""
    return ResultStore(Path(), benchmark_experiment, mlflow_client)


def benchmark_exists_in_mlflow(
    benchmark_key: str, benchmark_experiment: dict[str, str], mlflow_client: MlflowClient
) -> bool:
    """True when the benchmark experiment holds a FINISHED, active run tagged with ``benchmark_key``."""
    return _mlflow_only(benchmark_experiment, mlflow_client).in_mlflow(benchmark_key)


def benchmark_exists_on_disk(benchmark_key: str, root_dir: Path, environment: str) -> Path | None:
    """The cache file of ``benchmark_key`` when it exists and is valid, else ``None``."""
    return ResultStore.at(root_dir, environment, {}).cached_file(benchmark_key)


def benchmark_already_exists(
    benchmark_key: str,
    benchmark_experiment: dict[str, str],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> bool:
    """MLflow first (when a client is given), then the disk cache."""
    return ResultStore.at(root_dir, environment, benchmark_experiment, mlflow_client).exists(benchmark_key)


def fetch_benchmark_runs(mlflow_client: MlflowClient, benchmark_experiment: dict[str, str]) -> RunsByKey:
    """Every active run of the benchmark experiment that carries a ``benchmark_key`` tag, grouped by key
    (:meth:`ResultStore.runs_by_key`)."""
    return _mlflow_only(benchmark_experiment, mlflow_client).runs_by_key()


def find_existing_benchmark(
    benchmark_key: str,
    benchmark_experiment: dict[str, str],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> dict[str, Any] | None:
    """The stored result of ``benchmark_key`` (:meth:`ResultStore.find`)."""
    return ResultStore.at(root_dir, environment, benchmark_experiment, mlflow_client).find(benchmark_key)
