"""One Optuna sweep per (backbone, variant) that really trains, and records every trial in three sources.

For each trial, in this order (so a crash never leaves a trial that *looks* complete anywhere):

1. an MLflow run is created RUNNING in the backbone's HPO experiment, tagged per the HPO contract;
2. the model trains, is evaluated (validation macro-F1), exported to ONNX and checked, and its
   ``state_dict`` saved;
3. the trial folder gets ``trial_meta.json`` then, last and atomically, ``metrics.json``;
4. metrics, params and the model artifacts are logged, then the run is set FINISHED;
5. the Optuna trial completes with the objective value and user attributes pointing at the run.

Rerunning a sweep is idempotent: it runs only the trials the study still lacks (COMPLETE and PRUNED trials
count), and a trial whose identity already has a FINISHED run and a ``metrics.json`` is reused, not retrained.

Several workers (processes, machines) may run one sweep at once on a shared storage (``optuna.sweep_storage``,
e.g. Postgres): together they stop at exactly ``n_trials`` COMPLETE + PRUNED trials (:func:`_stop_at_n_trials`),
the storage's schema and the study are created once whoever comes first (retries and ``load_if_exists``), and
heartbeats let a live worker fail and replace the RUNNING trial of a worker that died.
Two trials that sample identical hyperparameters would share one ``trial_key_hash``; the second is pruned
(user attribute ``duplicate_of``) instead of writing a second record of the same identity.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from benchmark_pipeline import contract
from benchmark_pipeline.config import PipelineConfig
from benchmark_pipeline.demo.dataset import TokenBatch, load_split, write_dataset
from benchmark_pipeline.demo.settings import validate_demo_config
from benchmark_pipeline.hashing import data_fingerprint, study_key_hash, trial_key_hash
from benchmark_pipeline.selection.study_storage import close_storage, open_rdb_storage
from benchmark_pipeline.tracking import (
    default_artifact_location,
    get_or_create_experiment,
    make_client,
    search_all_runs,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str], None]

#: Seconds between a RUNNING trial's heartbeats in a shared sweep storage ($BENCHMARK_PIPELINE_SWEEP_HEARTBEAT_S,
#: default 30), and how long without one before another worker marks that trial FAIL (its worker died) so the
#: study runs a replacement: :data:`SWEEP_HEARTBEAT_GRACE_FACTOR` heartbeats.
SWEEP_HEARTBEAT_ENV = "BENCHMARK_PIPELINE_SWEEP_HEARTBEAT_S"
SWEEP_HEARTBEAT_INTERVAL_S = 30
SWEEP_HEARTBEAT_GRACE_FACTOR = 4
#: Trials that count towards ``n_trials`` (a FAIL trial is retried; a PRUNED one is a duplicate, done).
FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SurplusTrialError(RuntimeError):
    """Raised inside a trial that other workers' trials made unnecessary; Optuna records it as FAIL."""


@dataclass(frozen=True)
class SweepSummary:
    """What one sweep left behind, and where."""

    backbone: str
    variant: str
    study_name: str
    study_key_hash: str
    study_dir: str
    storage_url: str
    experiment_id: str
    trials_in_study: int
    trials_run_now: int
    best_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sample(trial: optuna.Trial, search_space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in sorted(search_space):
        spec = search_space[name]
        if spec["type"] == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(
                name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
            )
        else:
            params[name] = trial.suggest_float(
                name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
    return params


def _write_json_atomically(path: Path, payload: Mapping[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def study_storage_url(study_directory: Path) -> str:
    return f"sqlite:///{study_directory / contract.STUDY_DB_FILE}"


def sweep_storage_url(config: PipelineConfig, study_directory: Path) -> str:
    """``optuna.sweep_storage`` when configured (shared by all sweeps and workers), else the study's ``study.db``."""
    return config.optuna_sweep_storage or study_storage_url(study_directory)


def _stop_at_n_trials(study: optuna.Study, trial: optuna.Trial, n_trials: int, shared: bool) -> None:
    """Raise :class:`SurplusTrialError` when ``n_trials`` trials created before ``trial`` are finished or (on a
    shared storage) still running: with several workers, ``MaxTrialsCallback`` alone lets each worker start one
    trial past the count (it checks only after a trial ends). Trial numbers are assigned by the storage in
    creation order, so every worker agrees which trials are the first ``n_trials``.

    RUNNING trials count only on a shared storage, where heartbeats fail a dead worker's trial first; in a
    private ``study.db`` a RUNNING trial is one a crashed earlier sweep left behind, and never finishes.
    """
    states = (*FINISHED_STATES, optuna.trial.TrialState.RUNNING) if shared else FINISHED_STATES
    ahead = study.get_trials(deepcopy=False, states=states)
    if sum(1 for t in ahead if t.number < trial.number) >= n_trials:
        trial.set_user_attr("surplus", f"{n_trials} trials were already finished or running in other workers")
        study.stop()
        raise SurplusTrialError(f"trial {trial.number} is past n_trials={n_trials}")


def _earlier_twin(study: optuna.Study, trial: optuna.Trial, trial_key: str) -> int | None:
    """The number of an earlier COMPLETE or RUNNING trial (another worker's, maybe) with ``trial``'s identity.

    Each trial records its ``trial_key_hash`` before training, so of two workers drawing the same
    hyperparameters at once, both see the other and the later number yields: one record per identity.
    """
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
    twins = [
        t.number
        for t in study.get_trials(deepcopy=False, states=states)
        if t.number < trial.number and t.user_attrs.get(contract.ATTR_TRIAL_KEY_HASH) == trial_key
    ]
    return min(twins) if twins else None


@dataclass(frozen=True)
class _SweepPlan:
    """What every step of one sweep of ``backbone`` × ``variant`` reads: its identity, objective and data sizes."""

    config: PipelineConfig
    backbone: str
    variant: str
    study_name: str
    study_key: str
    data_fp: str
    metric_name: str
    direction: str
    hpo_seed: int
    max_length: int
    vocab_size: int
    storage: str
    study_directory: Path

    @property
    def variant_config(self) -> Mapping[str, Any]:
        variant_config: Mapping[str, Any] = self.config.hpo_config["variants"][self.variant]
        return variant_config

    @property
    def n_trials(self) -> int:
        return int(self.variant_config["n_trials"])

    @property
    def shared(self) -> bool:
        """Whether the study lives in ``optuna.sweep_storage``, which other workers may share."""
        return self.config.optuna_sweep_storage is not None


def run_sweep(
    config: PipelineConfig,
    backbone: str,
    variant: str,
    client: MlflowClient | None = None,
    progress: ProgressCallback | None = None,
) -> SweepSummary:
    """Run (or complete) the sweep of ``backbone`` × ``variant`` described by ``config.hpo_config``.

    The config is checked (:func:`~benchmark_pipeline.demo.settings.validate_demo_config`) before anything
    is written: a backbone the demo cannot train leaves no study, run or folder behind.
    """
    _check_sweep_request(config, backbone, variant)
    report = progress or (lambda message: logger.info(message))
    client = client or make_client(config.mlflow.tracking_uri)
    plan = _plan_sweep(config, backbone, variant)
    dataset = write_dataset(config.data_config, config.root_dir)
    train, validation = load_split(dataset.train, plan.max_length), load_split(dataset.validation, plan.max_length)
    experiment_id = get_or_create_experiment(
        client,
        config.mlflow.hpo_experiment_name(backbone),
        default_artifact_location(config.mlflow.tracking_uri, config.root_dir),
    )
    sampler = optuna.samplers.TPESampler(seed=plan.hpo_seed, n_startup_trials=4)
    rdb = _open_sweep_storage(plan.storage, shared=plan.shared)
    try:
        study = _open_study(plan, rdb=rdb, sampler=sampler)
        trials = _TrialRunner(
            plan,
            study=study,
            client=client,
            experiment_id=experiment_id,
            report=report,
            train=train,
            validation=validation,
        )
        trials.run_remaining()
        return _summarize(plan, study=study, experiment_id=experiment_id, trials_run_now=trials.ran)
    finally:
        close_storage(rdb)


def _check_sweep_request(config: PipelineConfig, backbone: str, variant: str) -> None:
    validate_demo_config(config)
    if backbone not in config.backbones:
        raise ValueError(f"backbone {backbone!r} is not configured; configured backbones: {list(config.backbones)}")
    variants = config.hpo_config["variants"]
    if variant not in variants:
        raise ValueError(f"variant {variant!r} is not in hpo_config.variants: {sorted(variants)}")


def _plan_sweep(config: PipelineConfig, backbone: str, variant: str) -> _SweepPlan:
    """The sweep's identity (study key, study folder, created if missing, and storage) and settings."""
    objective = config.objective
    data_fp = data_fingerprint(config.data_config)
    study_key = study_key_hash(backbone, variant, data_fp, config.hpo_config["variants"][variant], objective)
    study_directory = contract.study_dir(config.hpo_output_dir, backbone, study_key)
    study_directory.mkdir(parents=True, exist_ok=True)
    storage = sweep_storage_url(config, study_directory)
    return _SweepPlan(
        config=config,
        backbone=backbone,
        variant=variant,
        study_name=contract.study_name(backbone, variant),
        study_key=study_key,
        data_fp=data_fp,
        metric_name=objective["metric"],
        direction=objective.get("direction", "maximize"),
        hpo_seed=int(config.hpo_config.get("seed", 0)),
        max_length=int(config.data_config["max_length"]),
        vocab_size=int(config.data_config["vocab_size"]),
        storage=storage,
        study_directory=study_directory,
    )


def _open_sweep_storage(storage: str, *, shared: bool) -> optuna.storages.RDBStorage:
    """The study's storage; on a shared one, with heartbeats that let live workers replace a dead one's trial."""
    heartbeat = int(os.environ.get(SWEEP_HEARTBEAT_ENV) or SWEEP_HEARTBEAT_INTERVAL_S)
    with warnings.catch_warnings():
        # Optuna 5 still labels heartbeats experimental; they are the documented way to recover dead workers.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return open_rdb_storage(
            storage,
            heartbeat_interval=heartbeat if shared else None,
            grace_period=heartbeat * SWEEP_HEARTBEAT_GRACE_FACTOR if shared else None,
        )


def _open_study(
    plan: _SweepPlan, *, rdb: optuna.storages.RDBStorage, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    """The sweep's study, created or loaded, checked against the config, reseeded and attributed per the contract."""
    name, direction, storage = plan.study_name, plan.direction, plan.storage
    # load_if_exists: a worker that loses the race to create the study loads the winner's.
    # the config checked it is "maximize" or "minimize"
    study = optuna.create_study(study_name=name, storage=rdb, direction=direction, sampler=sampler, load_if_exists=True)  # type: ignore[arg-type]
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {name} in {storage} is {study.direction.name.lower()}, but the config asks to {direction}"
        )
    recorded_key = study.user_attrs.get(contract.STUDY_ATTR_STUDY_KEY_HASH)
    if recorded_key is not None and recorded_key != plan.study_key:
        # In a shared storage one study name serves one study key; another key (new data, a changed search
        # space) would mix two sweeps' trials under one set of attributes.
        raise ValueError(
            f"study {name} in {storage} belongs to study key {recorded_key[:12]}, not {plan.study_key[:12]} (the "
            f"data or hpo_config.variants.{plan.variant} changed): use another optuna.sweep_storage database for "
            "the new sweep"
        )
    previous_trials = len(study.get_trials(deepcopy=False))
    if previous_trials:
        # A resumed or extended sweep must not replay the seeded sampler from its first draw: it would suggest
        # the hyperparameters of trials 0, 1, ... again, and those trials would be pruned as duplicates. The
        # seed also depends on how many trials the study holds (a fresh sweep keeps seed ``hpo_seed``).
        study.sampler = optuna.samplers.TPESampler(seed=plan.hpo_seed + 1_000_003 * previous_trials, n_startup_trials=4)
    if plan.shared:
        # Workers sharing a study would otherwise all draw the same seeded suggestions (pruned as duplicates
        # of each other); a shared sweep is not reproducible draw by draw anyway, its trials interleave.
        study.sampler = optuna.samplers.TPESampler(
            seed=plan.hpo_seed + 1_000_003 * previous_trials + os.getpid(), n_startup_trials=4
        )
    for key, value in {
        contract.STUDY_ATTR_BACKBONE: plan.backbone,
        contract.STUDY_ATTR_VARIANT: plan.variant,
        contract.STUDY_ATTR_STUDY_KEY_HASH: plan.study_key,
        contract.STUDY_ATTR_DATA_FINGERPRINT: plan.data_fp,
        "metric_name": plan.metric_name,
    }.items():
        study.set_user_attr(key, value)
    return study


class _TrialRunner:
    """Runs the trials the study still lacks: Optuna's objective, one trial per call, recorded in every source.

    Built from a snapshot of the study and of the sweep's FINISHED MLflow runs, taken before the first trial;
    ``ran`` counts the trials this process trained.
    """

    def __init__(
        self,
        plan: _SweepPlan,
        *,
        study: optuna.Study,
        client: MlflowClient,
        experiment_id: str,
        report: ProgressCallback,
        train: TokenBatch,
        validation: TokenBatch,
    ) -> None:
        self.plan, self.study, self.client, self.report = plan, study, client, report
        self.experiment_id = experiment_id
        self.train, self.validation = train, validation
        self.existing = study.get_trials(deepcopy=False, states=FINISHED_STATES)
        self.remaining = max(0, plan.n_trials - len(self.existing))
        self.completed_keys = {
            t.user_attrs.get(contract.ATTR_TRIAL_KEY_HASH): t.number
            for t in self.existing
            if t.state == optuna.trial.TrialState.COMPLETE
        }
        self.finished_runs = {
            run.data.tags[contract.TAG_TRIAL_KEY_HASH]: run
            for run in search_all_runs(
                client,
                [experiment_id],
                f"tags.`{contract.TAG_STUDY_KEY_HASH}` = '{plan.study_key}' and attributes.status = 'FINISHED'",
            )
        }
        self.started = time.monotonic()
        self.ran = 0

    def run_remaining(self) -> None:
        plan, name = self.plan, self.plan.study_name
        if not self.remaining:
            self.report(f"[{name}] all {plan.n_trials} trials already finished; nothing to run")
            return
        self.report(
            f"[{name}] running {self.remaining} of {plan.n_trials} trials ({len(self.existing)} already finished)"
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study.optimize(
            self,
            n_trials=self.remaining,
            # Other workers' trials count too: stop once the study holds n_trials finished trials.
            callbacks=[optuna.study.MaxTrialsCallback(plan.n_trials, states=FINISHED_STATES)],
            catch=(SurplusTrialError,),
        )

    def __call__(self, trial: optuna.Trial) -> float:
        plan = self.plan
        _stop_at_n_trials(self.study, trial, plan.n_trials, plan.shared)
        hyperparameters = _sample(trial, plan.variant_config["search_space"])
        trial_key = trial_key_hash(plan.study_key, hyperparameters)
        trial.set_user_attr(contract.ATTR_TRIAL_KEY_HASH, trial_key)
        twin = self.completed_keys.get(trial_key)
        if twin is None and plan.shared:  # other workers' trials, not in the snapshot
            twin = _earlier_twin(self.study, trial, trial_key)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin)
            raise optuna.TrialPruned(f"hyperparameters identical to trial {twin}")
        folder = contract.trial_dir(plan.config.hpo_output_dir, plan.backbone, plan.study_key, trial_key)
        metrics_path = folder / contract.METRICS_FILE
        reusable = self.finished_runs.get(trial_key)
        if reusable is not None and metrics_path.exists():
            # A previous sweep finished this trial in MLflow and on disk but died before Optuna recorded it.
            trial.set_user_attr(contract.ATTR_MLFLOW_RUN_ID, reusable.info.run_id)
            self.completed_keys[trial_key] = trial.number
            return float(json.loads(metrics_path.read_text(encoding="utf-8"))[plan.metric_name])

        run_id, value, train_seconds = self._train_and_record(trial, hyperparameters, trial_key, folder)
        trial.set_user_attr(contract.ATTR_MLFLOW_RUN_ID, run_id)
        self.completed_keys[trial_key] = trial.number
        self.ran += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.ran * (self.remaining - self.ran)
        self.report(
            f"[{plan.study_name}] trial {self.ran}/{self.remaining} (#{trial.number}) {plan.metric_name}={value:.4f} "
            f"in {train_seconds:.1f}s; elapsed {elapsed:.0f}s, ~{eta:.0f}s left"
        )
        return value

    def _train_and_record(
        self, trial: optuna.Trial, hyperparameters: dict[str, Any], trial_key: str, folder: Path
    ) -> tuple[str, float, float]:
        """Steps 1-4 of the module docstring for one new trial: (MLflow run id, objective value, train seconds).

        The run is created RUNNING first and set FAILED if anything after that fails.
        """
        plan = self.plan
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{plan.study_name}_trial_{trial.number}",
            tags={
                contract.TAG_BACKBONE: plan.backbone,
                contract.TAG_VARIANT: plan.variant,
                contract.TAG_STUDY_NAME: plan.study_name,
                contract.TAG_STUDY_KEY_HASH: plan.study_key,
                contract.TAG_TRIAL_KEY_HASH: trial_key,
                contract.TAG_TRIAL_NUMBER: str(trial.number),
                contract.TAG_DATA_FINGERPRINT: plan.data_fp,
            },
        )
        run_id = run.info.run_id
        try:
            # torch is imported here, with the first trial this process trains: a rerun trains none.
            from benchmark_pipeline.demo.trial_model import train_trial

            seed = plan.hpo_seed * 10_000 + trial.number
            trained = train_trial(
                backbone=plan.backbone,
                hyperparameters=hyperparameters,
                seed=seed,
                shape=(plan.vocab_size, plan.max_length),
                epochs=int(plan.variant_config["epochs"]),
                batch_size=int(plan.config.hpo_config.get("batch_size", 32)),
                train=self.train,
                validation=self.validation,
                metric_name=plan.metric_name,
                folder=folder,
            )
            _write_json_atomically(
                folder / contract.TRIAL_META_FILE, self._trial_meta(trial, run_id, hyperparameters, trial_key, seed)
            )
            _write_json_atomically(folder / contract.METRICS_FILE, trained.metrics)
            self._log_to_mlflow(run_id, trained.metrics, hyperparameters, folder)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        return run_id, trained.value, trained.train_seconds

    def _trial_meta(
        self, trial: optuna.Trial, run_id: str, hyperparameters: dict[str, Any], trial_key: str, seed: int
    ) -> dict[str, Any]:
        from benchmark_pipeline.demo.trial_model import architecture

        plan = self.plan
        return {
            "backbone": plan.backbone,
            "variant": plan.variant,
            "study_name": plan.study_name,
            "study_key_hash": plan.study_key,
            "trial_key_hash": trial_key,
            "trial_number": trial.number,
            "mlflow_run_id": run_id,
            "hyperparameters": hyperparameters,
            "data_fingerprint": plan.data_fp,
            "objective": {"metric": plan.metric_name, "direction": plan.direction},
            "seed": seed,
            # what demo.models.load_trial_model needs to rebuild the architecture for the benchmark
            "model": architecture(plan.vocab_size, plan.max_length),
        }

    def _log_to_mlflow(
        self, run_id: str, metrics: Mapping[str, float], hyperparameters: Mapping[str, Any], folder: Path
    ) -> None:
        """Metrics, params and the model artifacts, then the run FINISHED (step 4)."""
        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), timestamp, 0) for k, v in sorted(metrics.items())],
            params=[Param(k, str(v)) for k, v in sorted(hyperparameters.items())],
        )
        for artifact in (contract.ONNX_FILE, contract.CHECKPOINT_FILE, contract.TRIAL_META_FILE):
            self.client.log_artifact(run_id, str(folder / artifact), contract.MODEL_ARTIFACT_DIR)
        self.client.set_terminated(run_id, "FINISHED")


def _summarize(plan: _SweepPlan, *, study: optuna.Study, experiment_id: str, trials_run_now: int) -> SweepSummary:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = None
    if complete:
        values = [t.value for t in complete if t.value is not None]
        best = (max if plan.direction == "maximize" else min)(values) if values else None
    return SweepSummary(
        backbone=plan.backbone,
        variant=plan.variant,
        study_name=plan.study_name,
        study_key_hash=plan.study_key,
        study_dir=str(plan.study_directory),
        storage_url=plan.storage,
        experiment_id=experiment_id,
        trials_in_study=len(study.get_trials(deepcopy=False, states=FINISHED_STATES)),
        trials_run_now=trials_run_now,
        best_value=best,
    )
