"""Step 2 and 3 of the workflow: filter out what is already benchmarked, then benchmark exactly what is left.

Persistence order for one benchmark, so that nothing finished is lost and nothing partial looks finished:

1. under the key's claim (:mod:`~benchmark_pipeline.benchmarking.claims`), an MLflow run is created
   RUNNING in the benchmark experiment, tagged with the ``benchmark_key`` (exactly once, even when the
   connection drops: :func:`~benchmark_pipeline.benchmarking.mlflow_logging.start_benchmark_run`);
2. the benchmark runs;
3. the result is written to the disk cache atomically, marked ``mlflow.logged = false``;
4. params, metrics, ``benchmark.json`` and the latency plot are logged, then the run is set FINISHED;
5. the cache entry is rewritten with ``mlflow.logged = true``.

Steps 3 and 4 are each caught: a failing store never stops the other store nor the other trials. A result
that reached neither store is a failure of that trial, and its run is set FAILED with both errors. If only
MLflow failed, the result stays in the cache, marked as not yet in MLflow (its run stays RUNNING); the next
``filter_missing_benchmarks``, benchmark materialization or sensor tick completes that run from the cache
without benchmarking again (:func:`~benchmark_pipeline.benchmarking.mlflow_logging.upload_pending_benchmarks`).
An interrupt (SIGTERM, Ctrl-C, Dagster's run termination) sets the run KILLED and releases the claim.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from benchmark_pipeline.benchmarking.cache import cache_path, write_cache_entry
from benchmark_pipeline.benchmarking.claims import benchmark_claim
from benchmark_pipeline.benchmarking.existence import ResultStore
from benchmark_pipeline.benchmarking.keys import key_for_trial
from benchmark_pipeline.benchmarking.leases import mlflow_lease
from benchmark_pipeline.benchmarking.mlflow_logging import (
    log_benchmark_result,
    pending_keys,
    start_benchmark_run,
    upload_pending,
    upload_pending_benchmarks,
)
from benchmark_pipeline.benchmarking.model_files import allowed_model_roots, resolve_model_dir
from benchmark_pipeline.benchmarking.runner import run_benchmark
from benchmark_pipeline.config import BenchmarkConfig, validate_benchmark_config
from benchmark_pipeline.selection.shapes import iter_trial_infos, map_trial_infos
from benchmark_pipeline.tracking import (
    MlflowUnavailableError,
    client_or_default,
    default_artifact_location,
    ensure_reachable,
    get_or_create_experiment,
    reachable_client,
)

logger = logging.getLogger(__name__)

DEFAULT_BENCHMARK_EXPERIMENT = {"name": "benchmarks"}
ProgressCallback = Callable[[str], None]


class BenchmarkFailedError(RuntimeError):
    """One or more benchmarks failed; the others finished and were saved. ``failures`` maps key → error."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        super().__init__("benchmarks failed:\n" + "\n".join(f"  {k}: {v}" for k, v in self.failures.items()))


def _benchmark_experiment_id(client: MlflowClient | None, experiment: Mapping[str, str], root_dir: Path) -> str | None:
    if client is None:
        return None
    if experiment.get("id"):
        return str(experiment["id"])
    return get_or_create_experiment(
        client, experiment["name"], default_artifact_location(client.tracking_uri, root_dir)
    )


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
    benchmarking again; so are cached results marked as logged whose run MLflow no longer has (a restored
    backup, a deleted run): when MLflow is reachable, the cache's word is checked against it.
    """
    validate_benchmark_config(benchmark_config)
    keyed = [(key_for_trial(info, data_config, benchmark_config), info) for info in iter_trial_infos(best_trials)]
    missing = missing_benchmark_keys(
        dict(keyed),
        benchmark_experiment=benchmark_experiment,
        root_dir=root_dir,
        environment=environment,
        mlflow_client=mlflow_client,
    )
    key_of = {id(info): key for key, info in keyed}  # the infos stay alive in ``keyed`` meanwhile
    return map_trial_infos(best_trials, lambda info: info if key_of[id(info)] in missing else None)


def missing_benchmark_keys(
    trials_by_key: Mapping[str, Mapping[str, Any]],
    *,
    benchmark_experiment: Mapping[str, str],
    root_dir: Path,
    environment: str,
    mlflow_client: MlflowClient | None = None,
) -> set[str]:
    """The keys of ``trials_by_key`` whose benchmark does not exist yet (see :func:`filter_missing_benchmarks`,
    which is this for trials whose keys are not computed yet)."""
    client = reachable_client(client_or_default(mlflow_client))
    store = ResultStore.at(root_dir, environment, benchmark_experiment, client)
    in_mlflow = _finished_in_mlflow(store, set(trials_by_key), Path(root_dir)) if client is not None else set()
    missing = set()
    for key, trial_info in trials_by_key.items():
        if key in in_mlflow:
            logger.info("Skipping %s: a FINISHED MLflow run has key %s", trial_info["backbone"], key)
        elif store.cached_entry(key) is not None:
            logger.info("Skipping %s: the disk cache has key %s", trial_info["backbone"], key)
        else:
            missing.add(key)
    total = len(trials_by_key)
    logger.info("%d of %d trial(s) need a benchmark; %d already benchmarked", len(missing), total, total - len(missing))
    return missing


def _finished_in_mlflow(store: ResultStore, keys: set[str], root_dir: Path) -> set[str]:
    """Keys with a complete MLflow run, after uploading the cached results MLflow lacks: pending ones, and
    those of ``keys`` the cache says logged but MLflow has no complete run of."""
    assert store.client is not None
    in_mlflow = store.runs_by_key().finished_keys()
    lost = sorted(k for k in keys - in_mlflow if store.cached_entry(k) is not None)
    pending = pending_keys(store.cache_directory)
    if pending or lost:
        experiment_id = _benchmark_experiment_id(store.client, store.experiment, root_dir)
        uploaded = upload_pending_benchmarks(
            store.client, experiment_id, store.cache_directory, pending, verify_logged=lost
        )
        in_mlflow |= set(uploaded)
    return in_mlflow


@dataclass(frozen=True)
class _Stores:
    """Where one call's results go: the disk cache, and MLflow when reachable (``experiment_id`` made)."""

    results: ResultStore
    experiment_id: str | None

    @property
    def client(self) -> MlflowClient | None:
        return self.results.client

    @property
    def cache_directory(self) -> Path:
        return self.results.cache_directory

    def existing(self, key: str) -> dict[str, Any] | None:
        """The stored result of ``key`` (completing an upload left pending first); the caller holds the claim."""
        if self.client is not None and self.experiment_id is not None:
            try:
                upload_pending(self.client, self.experiment_id, self.cache_directory, key, verify_logged=True)
            except (MlflowException, OSError) as error:
                logger.warning("could not upload the cached benchmark %s: %s", key, error)
        found = self.results.find(key)
        return (
            None
            if found is None
            else {**found, "status": "existing", "cache_path": str(cache_path(self.cache_directory, key))}
        )

    @contextlib.contextmanager
    def leased_run(self, key: str, hpo_run_id: str | None) -> Iterator[tuple[bool, str | None]]:
        """``(go, run_id)``: whether to measure, and the key's RUNNING run, held as its MLflow lease across
        machines (:mod:`~benchmark_pipeline.benchmarking.leases`; the local flock, already held, is the
        same-host fast path). ``go`` is False when another machine finished the key meanwhile. Without
        MLflow, or when the run cannot be created, the result goes to the cache only (``run_id`` None)."""
        client, experiment_id = self.client, self.experiment_id
        if client is None or experiment_id is None:
            yield True, None
            return
        with contextlib.ExitStack() as lease:
            try:
                run_id = lease.enter_context(
                    mlflow_lease(
                        client, experiment_id, key,
                        create_run=lambda: start_benchmark_run(client, experiment_id, key, hpo_run_id),
                        is_done=lambda: self.existing(key) is not None,
                        # the flock held here reaches this host's processes sharing this cache folder
                        scope=f"{socket.gethostname()}:{self.cache_directory.resolve()}",
                    )
                )  # fmt: skip
            except (MlflowException, OSError) as error:
                logger.warning(
                    "cannot create the MLflow run for %s (%s); the result will be cached on disk only", key, error
                )
                yield True, None
                return
            yield run_id is not None, run_id

    def end_run(self, run_id: str | None, status: str, error: str) -> None:
        """Close a run that holds no result (FAILED, or KILLED on an interrupt), with the reason as its tag."""
        if run_id is None or self.client is None:
            return
        try:
            self.client.set_tag(run_id, "error", error[:4000])
            self.client.set_terminated(run_id, status)
        except (MlflowException, OSError) as failure:
            logger.warning("could not set MLflow run %s %s: %s", run_id, status, failure)

    def persist(self, key: str, result: dict[str, Any], run_id: str | None) -> dict[str, Any]:
        """Steps 3-5 of the module docstring; raises :class:`ResultNotStoredError` when no store took it."""
        problems: list[str] = []
        cache_file = self._cache(key, result, run_id, problems)
        logged = self._log(key, result, run_id, cache_file, problems)
        if not logged and cache_file is None:
            message = "the result reached no store: " + "; ".join(problems)
            self.end_run(run_id, "FAILED", message)
            raise ResultNotStoredError(message)
        if logged and cache_file is not None:
            try:
                write_cache_entry(self.cache_directory, key, result, run_id, mlflow_logged=True)
            except OSError as error:  # MLflow holds it; the entry still says pending and is reconciled later
                logger.warning(
                    "benchmark %s is in MLflow run %s but its cache entry %s could not be marked logged: %s",
                    key,
                    run_id,
                    cache_file,
                    error,
                )
        return {
            **result,
            "status": "benchmarked",
            "mlflow_run_id": run_id,
            "mlflow_logged": logged,
            "cache_path": str(cache_file) if cache_file else None,
        }

    def _cache(self, key: str, result: dict[str, Any], run_id: str | None, problems: list[str]) -> Path | None:
        """Step 3: the cache entry, marked not yet in MLflow; ``None`` (the reason in ``problems``) on failure."""
        try:
            return write_cache_entry(self.cache_directory, key, result, run_id, mlflow_logged=False)
        except OSError as error:
            problems.append(
                f"cannot write the benchmark cache {cache_path(self.cache_directory, key)}: {type(error).__name__}: {error}"
            )
            logger.error("benchmark %s finished but %s", key, problems[-1])
            return None

    def _log(
        self, key: str, result: dict[str, Any], run_id: str | None, cache_file: Path | None, problems: list[str]
    ) -> bool:
        """Step 4: whether the result is logged to its MLflow run (the reason in ``problems`` when not)."""
        if run_id is None or self.client is None:
            problems.append("no MLflow run to log it to")
            return False
        try:
            # A dead server would make every call below wait out its retries: probe it first.
            ensure_reachable(self.client.tracking_uri)
            log_benchmark_result(self.client, run_id, result)
            return True
        except (MlflowUnavailableError, MlflowException, OSError) as error:
            problems.append(f"cannot log it to MLflow run {run_id}: {type(error).__name__}: {error}")
            logger.warning(
                "benchmark %s finished but is not in MLflow yet (%s); it is uploaded from %s on the next pass",
                key,
                error,
                cache_file,
            )
            return False


class ResultNotStoredError(RuntimeError):
    """A benchmark finished but neither the disk cache nor MLflow took its result (the message says why)."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` for the block, so runs are closed KILLED and claims released.

    Only where nobody handles SIGTERM yet (Dagster maps it to its own interrupt already) and on the main
    thread (the only one Python delivers signals to).
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
    is held (another process just made it) is not run again: its entry has ``status: "existing"``. When
    ``mlflow_client`` is None, ``$MLFLOW_TRACKING_URI`` is used if set; with no MLflow at all, results go to
    the disk cache only. A failing benchmark or store does not stop the others: after all ran,
    :class:`BenchmarkFailedError` lists the failures (finished results are saved before it is raised).
    ``hpo_config`` is accepted for the design document's signature.

    ``test_data_path`` (else ``benchmark_config.test_data``, relative to ``root_dir``; else inputs synthesized
    from the model's signature) is read, never written. Model files are read from a trial's ``trial_dir``
    inside ``hpo_output_dir`` or the HPO folder the retrieval recorded (``trial_info["hpo_output_dir"]``),
    else downloaded from its HPO run's MLflow artifacts (:mod:`~benchmark_pipeline.benchmarking.model_files`).
    """
    settings = validate_benchmark_config(benchmark_config)
    test_data = Path(test_data_path) if test_data_path is not None else settings.test_data_path(Path(root_dir))
    experiment = benchmark_experiment or DEFAULT_BENCHMARK_EXPERIMENT
    client = reachable_client(client_or_default(mlflow_client))
    stores = _Stores(
        ResultStore.at(Path(root_dir), environment, experiment, client),
        _benchmark_experiment_id(client, experiment, Path(root_dir)),
    )
    hpo_dirs = [hpo_output_dir, *(info.get("hpo_output_dir") for info in iter_trial_infos(best_trials))]
    bench = _Benchmarks(
        stores=stores,
        allowed_roots=allowed_model_roots(Path(root_dir), environment, hpo_dirs),
        test_data=test_data,
        data_config=data_config,
        benchmark_config=benchmark_config,
        settings=settings,
        progress=progress,
    )
    with _sigterm_as_interrupt():
        results = map_trial_infos(best_trials, bench.benchmark_or_record_failure)
    if bench.failures:
        raise BenchmarkFailedError(bench.failures)
    return results


@dataclass
class _Benchmarks:
    """One :func:`benchmark_best_trials` call: where results go, what the benchmarks read, what failed."""

    stores: _Stores
    allowed_roots: Sequence[Path]
    test_data: Path | None
    data_config: Mapping[str, Any]
    benchmark_config: Mapping[str, Any]  # as given: the benchmark key hashes it
    settings: BenchmarkConfig  # the same, validated: what the benchmark runs with
    progress: ProgressCallback | None
    failures: dict[str, str] = field(default_factory=dict)

    def benchmark_or_record_failure(self, trial_info: dict[str, Any]) -> dict[str, Any] | None:
        """The trial's result; ``None`` when it failed (the error recorded in :attr:`failures` by key)."""
        # The trial's key, computed once as it comes in and carried from here on.
        key = key_for_trial(trial_info, self.data_config, self.benchmark_config)
        try:
            return self.benchmark(key, trial_info)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:
            self.failures[key] = f"{type(error).__name__}: {error}"
            logger.error("benchmark %s failed: %s", key, self.failures[key])
            return None

    def benchmark(self, key: str, trial_info: dict[str, Any]) -> dict[str, Any] | None:
        """Under the key's claim and then its MLflow lease: the stored result if there is one, else a benchmark."""
        # Concurrent materializations of one key queue here; whoever comes second finds the first's result.
        with benchmark_claim(self.stores.cache_directory, key):
            found = self.stores.existing(key)
            if found is not None:
                logger.info(
                    "benchmark %s already exists (MLflow run %s); not run again", key, found.get("mlflow_run_id")
                )
                return found
            with self.stores.leased_run(key, trial_info.get("run_id")) as (go, run_id):
                if not go:
                    found = self.stores.existing(key)
                    logger.info(
                        "benchmark %s was made on another machine meanwhile (MLflow run %s); not run again",
                        key,
                        found and found.get("mlflow_run_id"),
                    )
                    return found
                return self.run_and_persist(key, run_id, trial_info)

    def run_and_persist(self, key: str, run_id: str | None, trial_info: dict[str, Any]) -> dict[str, Any]:
        try:
            with tempfile.TemporaryDirectory(prefix="benchmark_model_") as download_root:
                model_dir = resolve_model_dir(trial_info, self.allowed_roots, self.stores.client, Path(download_root))
                benchmark = run_benchmark(
                    key,
                    trial_info,
                    model_dir,
                    self.test_data,
                    self.data_config,
                    self.settings,
                    self.progress,
                )
                result = benchmark.to_dict()
        except BaseException as error:
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit)) or not isinstance(error, Exception)
            self.stores.end_run(run_id, "KILLED" if interrupted else "FAILED", f"{type(error).__name__}: {error}")
            raise
        return self.stores.persist(key, result, run_id)
