"""Sensors: ``benchmark_sensor`` (benchmark only what is missing) and ``partition_discovery_sensor``.

``benchmark_sensor``, each tick:

1. reads the benchmark key in the metadata of every registered partition's latest ``best_trial`` /
   ``best_trial_per_variant`` materialization (one indexed event-log query per partition; Dagster's
   one-query ``get_latest_tags_by_partition`` only serves its own whitelisted tags);
2. asks MLflow once for every key of the benchmark experiment (one paginated, tag-filtered search), and
   checks the disk cache for keys MLflow does not have;
3. counts failed and successful Dagster runs per key, and finds every queued or running benchmark run of a
   partition, whoever launched it (the UI, ``dagster asset materialize``, a backfill: run-storage queries);
4. requests a run for each missing key that is neither running nor out of attempts, and names in its skip
   reason the MLflow benchmark runs RUNNING for longer than ``benchmark_config.stale_running_after_s``
   (default 6 h: a process that died without closing its run; they block nothing).

Retries: Dagster never launches two runs with the same ``run_key``, which would block a failed benchmark
forever. The run key is therefore ``{benchmark_key}#attempt-{n}``, ``n`` being the number of failed runs of
that key so far; after :data:`MAX_BENCHMARK_ATTEMPTS` failures the key is left alone (and named in the
skip reason) until a person looks. A key with a FINISHED MLflow run (or a cache entry) is never requested.

Generations: a key whose result is missing again after a successful run (the MLflow run deleted, the cache
gone) is requested again under a new run key, ``{benchmark_key}#generation-{g}#attempt-{n}``, ``g`` being the
number of successful runs of that key; after :data:`MAX_BENCHMARK_GENERATIONS` successful runs whose result
did not stay, the key is left alone and named in the skip reason (something keeps deleting it).

The skip reason names every skipped partition and key, grouped by why it was skipped.
"""

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import dagster as dg

# Dagster's own run tags for a run's partition (or partition range); not re-exported at the top level in 1.13.
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from benchmark_pipeline.benchmarking.existence import ResultStore, RunsByKey
from benchmark_pipeline.benchmarking.mlflow_logging import pending_keys, upload_pending_benchmarks
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.defs.jobs import benchmark_job, benchmark_per_variant_job
from benchmark_pipeline.defs.partitions import (
    PAIRS_REGISTRY,
    backbone_partitions,
    backbone_variant_partitions,
    missing_partitions,
    multi_key,
    split_pair_key,
)
from benchmark_pipeline.defs.resources import MlflowResource, PipelineSettings
from benchmark_pipeline.discovery import discover_partitions
from benchmark_pipeline.tracking import MlflowUnavailableError, ensure_reachable

MAX_BENCHMARK_ATTEMPTS = 3
#: Successful runs of one key after which a result that went missing again is no longer re-requested.
MAX_BENCHMARK_GENERATIONS = 3
#: Seconds between ``benchmark_sensor`` ticks ($BENCHMARK_PIPELINE_SENSOR_INTERVAL_S, default 60).
SENSOR_INTERVAL_S = int(os.environ.get("BENCHMARK_PIPELINE_SENSOR_INTERVAL_S", "60"))
SENSOR_TAG = "benchmark_pipeline/sensor"
RUN_KEY_TAG = "benchmark_pipeline/benchmark_key"
_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def latest_selection_key(instance: dg.DagsterInstance, asset_name: str, partition: str) -> str | None:
    """The full benchmark key in the metadata of a partition's latest materialization."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset_name), asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return None
    value = records[0].asset_materialization.metadata.get("benchmark_key")
    return getattr(value, "value", None)


def _runs_by_key(instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus]) -> Counter[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={SENSOR_TAG: "benchmark_sensor"}, statuses=statuses))
    return Counter(run.tags.get(RUN_KEY_TAG, "") for run in runs)


#: The benchmark assets, and the partitions definition of each (to expand a run's partition range).
_BENCHMARK_ASSETS = {
    "benchmark_result": backbone_partitions,
    "benchmark_result_per_variant": backbone_variant_partitions,
}
_BENCHMARK_JOB_ASSETS = {
    benchmark_job.name: "benchmark_result",
    benchmark_per_variant_job.name: "benchmark_result_per_variant",
}


def in_progress_partitions(instance: dg.DagsterInstance) -> set[tuple[str, str]]:
    """``(benchmark asset, partition key)`` of every queued or running run that materializes a benchmark asset,
    whoever launched it (this sensor, the UI, ``dagster asset materialize``, a backfill): one run-storage query.
    A run over a partition range counts for every partition in it."""
    busy: set[tuple[str, str]] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS)):
        assets = {key.to_user_string() for key in (run.asset_selection or ())} & set(_BENCHMARK_ASSETS)
        if run.job_name in _BENCHMARK_JOB_ASSETS:
            assets.add(_BENCHMARK_JOB_ASSETS[run.job_name])
        for asset in assets:
            partition = run.tags.get(PARTITION_NAME_TAG)
            start, end = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
            if partition:
                busy.add((asset, partition))
            elif start and end:
                with dg.partition_loading_context(dynamic_partitions_store=instance):  # resolves the dynamic partitions
                    keys = _BENCHMARK_ASSETS[asset].get_partition_keys_in_range(dg.PartitionKeyRange(start, end))
                busy.update((asset, key) for key in keys)
    return busy


def benchmark_run_key(benchmark_key: str, generation: int, attempt: int) -> str:
    """The sensor's run key: new for every retry after a failure and every re-request after a success."""
    return (
        f"{benchmark_key}#attempt-{attempt}"
        if generation == 0
        else f"{benchmark_key}#generation-{generation}#attempt-{attempt}"
    )


def skip_summary(skipped: dict[str, list[str]]) -> str:
    """``"already benchmarked: bilstm (key 1a2b…); running: …"``: what was skipped, grouped by why."""
    return "; ".join(f"{why}: {', '.join(sorted(what))}" for why, what in sorted(skipped.items())) or "none skipped"


def _label(partition: Any, key: str) -> str:
    name = (
        "|".join(partition.keys_by_dimension[d] for d in sorted(partition.keys_by_dimension))
        if isinstance(partition, dg.MultiPartitionKey)
        else str(partition)
    )
    return f"{name} (key {key[:12]}…)"


def _wanted_benchmarks(instance: dg.DagsterInstance) -> list[tuple[str, Any, str]]:
    """(job name, run partition key, benchmark key) of every registered partition with a selected trial."""
    wanted: list[tuple[str, Any, str]] = []
    for backbone in sorted(instance.get_dynamic_partitions("backbone")):
        key = latest_selection_key(instance, "best_trial", backbone)
        if key is not None:
            wanted.append((benchmark_job.name, backbone, key))
    for pair in sorted(instance.get_dynamic_partitions(PAIRS_REGISTRY)):
        key = latest_selection_key(instance, "best_trial_per_variant", pair)
        if key is not None:
            wanted.append((benchmark_per_variant_job.name, multi_key(*split_pair_key(pair)), key))
    return wanted


def _upload_pending(context: dg.SensorEvaluationContext, client: Any, store: ResultStore) -> None:
    """Results cached while MLflow was down are uploaded here (no benchmark runs); costs nothing otherwise."""
    pending = pending_keys(store.cache_directory)
    if pending:
        uploaded = upload_pending_benchmarks(client, store.experiment_id(), store.cache_directory, pending)
        if uploaded:
            context.log.info(f"uploaded {len(uploaded)} cached benchmark(s) to MLflow: {uploaded}")


@dataclass(frozen=True)
class _RunHistory:
    """The instance's runs of each benchmark key (by their ``RUN_KEY_TAG``) and the partitions in progress."""

    failed: Counter[str]
    succeeded: Counter[str]
    running: Counter[str]
    busy: set[tuple[str, str]]

    @classmethod
    def of(cls, instance: dg.DagsterInstance) -> "_RunHistory":
        return cls(
            failed=_runs_by_key(instance, [dg.DagsterRunStatus.FAILURE]),
            succeeded=_runs_by_key(instance, [dg.DagsterRunStatus.SUCCESS]),
            running=_runs_by_key(instance, _IN_PROGRESS),
            busy=in_progress_partitions(instance),
        )

    def why_not_request(self, job_name: str, partition: Any, key: str, requested: set[str]) -> str | None:
        """Why a key that is not benchmarked yet is not requested now; ``None``: request it."""
        if self.running[key] or key in requested or (_BENCHMARK_JOB_ASSETS[job_name], str(partition)) in self.busy:
            return "running or requested"
        if self.failed[key] >= MAX_BENCHMARK_ATTEMPTS:
            return f"failed {MAX_BENCHMARK_ATTEMPTS} times, left for a person to look at"
        if self.succeeded[key] >= MAX_BENCHMARK_GENERATIONS:
            return f"result lost again after {MAX_BENCHMARK_GENERATIONS} successful runs, left for a person to look at"
        return None


def _stale_summary(runs_by_key: RunsByKey, config: PipelineConfig) -> str:
    """``"; N MLflow benchmark run(s) RUNNING for longer than …"`` or ``""``. Such a run blocks nothing (only
    FINISHED runs count), but its process died without closing it."""
    stale = runs_by_key.stale_running(config.benchmark.stale_running_after_s)
    if not stale:
        return ""
    return f"; {len(stale)} MLflow benchmark run(s) RUNNING for longer than stale_running_after_s: " + ", ".join(
        f"{run.benchmark_key[:12]}… (run {run.run_id}, {run.age_s / 3600:.1f} h)" for run in stale[:5]
    )


@dg.sensor(
    jobs=[benchmark_job, benchmark_per_variant_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="Requests benchmark runs only for selected trials whose benchmark key has no FINISHED MLflow run or cache entry.",
)
def benchmark_sensor(context: dg.SensorEvaluationContext, settings: PipelineSettings, mlflow: MlflowResource) -> Any:
    config = settings.load()
    try:
        ensure_reachable(mlflow.tracking_uri)
    except MlflowUnavailableError as error:
        return dg.SkipReason(f"MLflow is unreachable, so existing benchmarks cannot be checked: {error}")
    instance = context.instance
    wanted = _wanted_benchmarks(instance)
    if not wanted:
        return dg.SkipReason("no partition has a best trial yet: materialize best_trial / best_trial_per_variant first")

    client = mlflow.client()
    store = ResultStore.at(config.root_dir, config.environment, config.benchmark_experiment(), client)
    _upload_pending(context, client, store)
    runs_by_key = store.runs_by_key()
    finished = runs_by_key.finished_keys()
    history = _RunHistory.of(instance)
    requests: list[dg.RunRequest] = []
    skipped: dict[str, list[str]] = {}
    requested_keys: set[str] = set()
    for job_name, partition, key in wanted:
        if key in finished or store.cached_entry(key) is not None:
            why: str | None = "already benchmarked"
        else:
            why = history.why_not_request(job_name, partition, key, requested_keys)
        if why is not None:
            skipped.setdefault(why, []).append(_label(partition, key))
            continue
        requested_keys.add(key)
        requests.append(
            dg.RunRequest(
                job_name=job_name,
                partition_key=partition,
                run_key=benchmark_run_key(key, history.succeeded[key], history.failed[key]),
                tags={SENSOR_TAG: "benchmark_sensor", RUN_KEY_TAG: key},
            )
        )
    summary = skip_summary(skipped) + _stale_summary(runs_by_key, config)
    if not requests:
        return dg.SkipReason(f"nothing to benchmark across {len(wanted)} partitions: {summary}")
    context.log.info(f"requesting {len(requests)} benchmark(s); {summary}")
    return dg.SensorResult(run_requests=requests)


@dg.sensor(
    minimum_interval_seconds=300,
    description="Registers backbone and variant partitions found in the config, MLflow tags and trial folders.",
)
def partition_discovery_sensor(
    context: dg.SensorEvaluationContext, settings: PipelineSettings, mlflow: MlflowResource
) -> Any:
    found = discover_partitions(settings.load(), mlflow.client())
    added = missing_partitions(context.instance, found.backbones, found.variants, found.pairs_with_trials)
    requests = [
        dg.AddDynamicPartitionsRequest(partitions_def_name=name, partition_keys=keys)
        for name, keys in added.items()
        if keys
    ]
    if not requests:
        return dg.SkipReason(
            f"no new partitions ({len(found.backbones)} backbones, {len(found.pairs_with_trials)} pairs with trials)"
        )
    return dg.SensorResult(dynamic_partitions_requests=requests)
