"""Step 2 and 3 of the workflow: filter out what is already benchmarked, then benchmark exactly what is left.

Persistence order for one benchmark, so that nothing finished is lost and nothing partial looks finished:

1. an MLflow run is created RUNNING in the benchmark experiment, tagged with the ``benchmark_key``
   (a crash leaves it RUNNING or FAILED, and such runs never block a rerun);
2. the benchmark runs;
3. the result is written to the disk cache atomically, marked ``mlflow.logged = false``;
4. params, metrics, ``benchmark.json`` and the latency plot are logged, then the run is set FINISHED;
5. the cache entry is rewritten with ``mlflow.logged = true``.

If MLflow fails at step 1 or 4, the finished result stays in the cache, marked as not yet in MLflow; the
next ``filter_missing_benchmarks``, benchmark materialization or sensor tick uploads it without benchmarking
again (:func:`~benchmark_pipeline.benchmarking.mlflow_logging.upload_pending_benchmarks`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.cache import cache_dir, cache_path, read_cache_entry, write_cache_entry
from benchmark_pipeline.benchmarking.claims import benchmark_claim
from benchmark_pipeline.benchmarking.existence import fetch_benchmark_runs, find_existing_benchmark, finished_keys
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.leases import mlflow_lease
from benchmark_pipeline.benchmarking.mlflow_logging import (
    log_benchmark_result,
    pending_keys,
    start_benchmark_run,
    upload_pending_benchmarks,
)
from benchmark_pipeline.benchmarking.model_files import allowed_model_roots, resolve_model_dir
from benchmark_pipeline.benchmarking.runner import run_benchmark
from benchmark_pipeline.config import resolve_test_data, validate_benchmark_config
from benchmark_pipeline.selection.shapes import iter_trial_infos, map_trial_infos
from benchmark_pipeline.tracking import (
    client_or_default,
    MlflowUnavailableError,
    client_tracking_uri,
    default_artifact_location,
    ensure_reachable,
    get_or_create_experiment,
)

logger = logging.getLogger(__name__)

DEFAULT_BENCHMARK_EXPERIMENT = {"name": "benchmarks"}
#: Seconds the server may take to answer /health before a finished result is kept for a later upload.
LOGGING_PROBE_TIMEOUT_S = 15.0
ProgressCallback = Callable[[str], None]


class BenchmarkFailedError(RuntimeError):
    """One or more benchmarks failed; the others finished and were saved. ``failures`` maps key → error."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("benchmarks failed:\n" + "\n".join(f"  {k}: {v}" for k, v in self.failures.items()))


def _reachable(client: MlflowClient | None) -> MlflowClient | None:
    if client is None:
        return None
    try:
        ensure_reachable(client_tracking_uri(client))
    except MlflowUnavailableError as error:
        logger.warning("%s; using the disk cache only", error)
        return None
    return client


def _benchmark_experiment_id(client: MlflowClient | None, experiment: Mapping[str, str], root_dir: Path) -> str | None:
    if client is None:
        return None
    if experiment.get("id"):
        return str(experiment["id"])
    return get_or_create_experiment(client, experiment["name"], default_artifact_location(client_tracking_uri(client), root_dir))


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

    Cached results that could not be logged to MLflow earlier (an outage) are uploaded first, without
    benchmarking again.
    """
    validate_benchmark_config(benchmark_config)
    client = _reachable(client_or_default(mlflow_client))
    directory = cache_dir(root_dir, environment)
    pending = pending_keys(directory) if client is not None else []
    if pending:
        upload_pending_benchmarks(client, _benchmark_experiment_id(client, benchmark_experiment, Path(root_dir)), directory, pending)
    in_mlflow = finished_keys(fetch_benchmark_runs(client, benchmark_experiment)) if client is not None else set()

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


def benchmark_best_trials(
    best_trials: dict[str, Any],
    test_data_path: Path | None,
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
    ``mlflow_run_id``, ``mlflow_logged`` and ``cache_path``). Each key is benchmarked under an exclusive
    claim (:mod:`~benchmark_pipeline.benchmarking.claims`); a key whose result exists by the time the claim
    is held (another process just made it) is not run again: its entry has ``status: "existing"``. When ``mlflow_client`` is None,
    ``$MLFLOW_TRACKING_URI`` is used if set; with no MLflow at all, results go to the disk cache only.
    A failing benchmark does not stop the others: after all ran, :class:`BenchmarkFailedError` lists the
    failures (finished results are saved before it is raised). ``hpo_config`` is accepted for the design
    document's signature.

    ``test_data_path`` (else ``benchmark_config.test_data``, relative to ``root_dir``; else inputs synthesized
    from the model's signature) is read, never written. Model files are read from a trial's ``trial_dir``
    inside ``hpo_output_dir`` or the HPO folder the retrieval recorded (``trial_info["hpo_output_dir"]``),
    else downloaded from its HPO run's MLflow artifacts (:mod:`~benchmark_pipeline.benchmarking.model_files`).
    """
    validate_benchmark_config(benchmark_config)
    test_data = Path(test_data_path) if test_data_path is not None else resolve_test_data(benchmark_config, Path(root_dir))
    experiment = benchmark_experiment or DEFAULT_BENCHMARK_EXPERIMENT
    client = _reachable(client_or_default(mlflow_client))
    experiment_id = _benchmark_experiment_id(client, experiment, Path(root_dir))
    directory = cache_dir(root_dir, environment)
    hpo_dirs = [hpo_output_dir, *(info.get("hpo_output_dir") for info in iter_trial_infos(best_trials))]
    allowed_roots = allowed_model_roots(Path(root_dir), environment, hpo_dirs)
    failures: dict[str, str] = {}

    def existing_result(key: str) -> dict[str, Any] | None:
        upload_pending_benchmarks(client, experiment_id, directory, [key])
        found = find_existing_benchmark(key, experiment, Path(root_dir), environment, client)
        return None if found is None else {**found, "status": "existing", "cache_path": str(cache_path(directory, key))}

    def benchmark_one(trial_info: dict[str, Any]) -> dict[str, Any] | None:
        key = key_for_trial(trial_info, data_config, benchmark_config)
        # Concurrent materializations of one key queue here; whoever comes second finds the first's result.
        # The flock is the same-host fast path; the MLflow lease holds across machines (leases.py).
        with benchmark_claim(directory, key):
            found = existing_result(key)
            if found is not None:
                logger.info("benchmark %s already exists (MLflow run %s); not run again", key, found.get("mlflow_run_id"))
                return found
            with contextlib.ExitStack() as lease:
                run_id = None
                if client is not None and experiment_id is not None:
                    try:
                        run_id = lease.enter_context(
                            mlflow_lease(
                                client, experiment_id, key,
                                create_run=lambda: start_benchmark_run(client, experiment_id, key, trial_info.get("run_id")),
                                is_done=lambda: existing_result(key) is not None,
                                # the flock held here reaches this host's processes sharing this cache folder
                                scope=f"{socket.gethostname()}:{directory.resolve()}",
                            )
                        )  # fmt: skip
                    except (MlflowException, OSError) as error:
                        logger.warning("cannot create the MLflow run for %s (%s); the result will be cached on disk only", key, error)
                    else:
                        if run_id is None:
                            found = existing_result(key)
                            logger.info("benchmark %s was made on another machine meanwhile (MLflow run %s); not run again", key, found and found.get("mlflow_run_id"))
                            return found
                return run_and_persist(key, trial_info, run_id)

    def run_and_persist(key: str, trial_info: dict[str, Any], run_id: str | None) -> dict[str, Any] | None:
        try:
            with tempfile.TemporaryDirectory(prefix="benchmark_model_") as download_root:
                model_dir = resolve_model_dir(trial_info, allowed_roots, client, Path(download_root))
                result = run_benchmark(key, trial_info, model_dir, test_data, data_config, benchmark_config, progress).to_dict()
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
        cache_file = write_cache_entry(directory, key, result, run_id, mlflow_logged=False)
        logged = False
        if run_id is not None:
            try:
                # A dead server would make MLflow's client retry for minutes: probe it first (generously: a
                # refused connection fails at once, and a busy server must not be mistaken for a dead one).
                ensure_reachable(client_tracking_uri(client), timeout_s=LOGGING_PROBE_TIMEOUT_S)
                log_benchmark_result(client, run_id, result)
                logged = True
            except (MlflowUnavailableError, MlflowException, OSError) as error:
                logger.warning("benchmark %s finished but is not in MLflow yet (%s); it stays in %s and is uploaded on the next pass", key, error, cache_file)
        if logged:
            write_cache_entry(directory, key, result, run_id, mlflow_logged=True)
        return {**result, "status": "benchmarked", "mlflow_run_id": run_id, "mlflow_logged": logged, "cache_path": str(cache_file)}

    results = map_trial_infos(best_trials, benchmark_one)
    if failures:
        raise BenchmarkFailedError(failures)
    return results
