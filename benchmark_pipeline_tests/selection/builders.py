"""Hand-built selection sources for the selection tests: synthetic trials written per the HPO contract into MLflow
runs, Optuna studies and trial folders, and the retrieval call over them."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution

from benchmark_pipeline import contract
from benchmark_pipeline.hashing import data_fingerprint
from benchmark_pipeline.selection import retrieve_best_trials
from benchmark_pipeline_tests.tiny_config import tiny_config_dict

METRIC = "macro-f1"
DATA_CONFIG: dict[str, Any] = tiny_config_dict("/unused")["data_config"]
DATA_FP = data_fingerprint(DATA_CONFIG)
BENCHMARK_CONFIG: dict[str, Any] = tiny_config_dict("/unused")["benchmark_config"]
RETRIEVAL_LOGGER = "benchmark_pipeline.selection.trial_retrieval"


def hexkey(label: str, prefix: str = "") -> str:
    """A 64-hex-digit identity; ``prefix`` fixes its sort order when a test needs one."""
    return prefix + hashlib.sha256(label.encode()).hexdigest()[len(prefix) :]


def unique_name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Trial:
    """One synthetic trial, written the same way into any source."""

    backbone: str
    variant: str
    number: int
    metric: Any
    key: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def trial_key(self) -> str:
        return self.key or hexkey(f"{self.backbone}/{self.variant}/{self.number}")

    @property
    def study_key(self) -> str:
        return hexkey(f"study/{self.backbone}/{self.variant}")

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return self.params or {"learning_rate": 0.001 * (self.number + 1), "width": 16}


def contract_tags(trial: Trial) -> dict[str, str]:
    return {
        contract.TAG_BACKBONE: trial.backbone,
        contract.TAG_VARIANT: trial.variant,
        contract.TAG_STUDY_NAME: contract.study_name(trial.backbone, trial.variant),
        contract.TAG_STUDY_KEY_HASH: trial.study_key,
        contract.TAG_TRIAL_KEY_HASH: trial.trial_key,
        contract.TAG_TRIAL_NUMBER: str(trial.number),
        contract.TAG_DATA_FINGERPRINT: DATA_FP,
    }


def log_run(
    client: MlflowClient,
    experiment_id: str,
    trial: Trial,
    *,
    status: str = "FINISHED",
    tags: dict[str, str | None] | None = None,
    log_metric: bool = True,
    delete: bool = False,
    start_time: int | None = None,
) -> str:
    """An MLflow run for ``trial`` per the contract; ``tags`` overrides (``None`` drops a tag)."""
    all_tags = contract_tags(trial)
    for name, value in (tags or {}).items():
        if value is None:
            all_tags.pop(name, None)
        else:
            all_tags[name] = value
    run_id = client.create_run(experiment_id, start_time=start_time, tags=all_tags).info.run_id
    metrics = [Metric(METRIC, float(trial.metric), 0, 0)] if log_metric else []
    params = [Param(k, str(v)) for k, v in sorted(trial.hyperparameters.items())]
    client.log_batch(run_id, metrics=metrics, params=params)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    if delete:
        client.delete_run(run_id)
    return run_id


def new_experiment(client: MlflowClient, stem: str = "sel") -> tuple[str, str]:
    name = unique_name(stem)
    return name, client.create_experiment(name)


def write_study(
    hpo_dir: Path,
    backbone: str,
    variant: str,
    trials: Sequence[dict[str, Any]],
    *,
    direction: str = "maximize",
    study_key: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """``study.db`` under the study folder; ``trials`` are ``create_trial`` keyword dicts, numbered in order.

    Each may give ``state`` (default COMPLETE), ``value``, ``trial_key`` and ``run_id`` (user attributes).
    """
    study_key = study_key or hexkey(f"study/{backbone}/{variant}")
    folder = contract.study_dir(hpo_dir, backbone, study_key)
    folder.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=contract.study_name(backbone, variant),
        storage=f"sqlite:///{folder / contract.STUDY_DB_FILE}",
        direction=direction,
        load_if_exists=True,
    )
    study_attrs = {
        contract.STUDY_ATTR_BACKBONE: backbone,
        contract.STUDY_ATTR_VARIANT: variant,
        contract.STUDY_ATTR_STUDY_KEY_HASH: study_key,
        contract.STUDY_ATTR_DATA_FINGERPRINT: DATA_FP,
        **(attrs or {}),
    }
    for name, value in study_attrs.items():
        study.set_user_attr(name, value)
    for spec in trials:
        user_attrs = {}
        if spec.get("trial_key"):
            user_attrs[contract.ATTR_TRIAL_KEY_HASH] = spec["trial_key"]
        if spec.get("run_id"):
            user_attrs[contract.ATTR_MLFLOW_RUN_ID] = spec["run_id"]
        params = spec.get("params", {"learning_rate": 0.001, "width": 16})
        study.add_trial(
            optuna.trial.create_trial(
                state=spec.get("state", optuna.trial.TrialState.COMPLETE),
                value=spec.get("value"),
                params=params,
                distributions={
                    "learning_rate": FloatDistribution(0.0001, 0.1, log=True),
                    "width": CategoricalDistribution([8, 16, 24, 32]),
                },
                user_attrs=user_attrs,
            )
        )
    return folder / contract.STUDY_DB_FILE


def write_studies(hpo_dir: Path, trials: Iterable[Trial], run_ids: dict[str, str] | None = None) -> None:
    """One study per (backbone, variant) holding ``trials`` in trial-number order (numbers must be dense)."""
    groups: dict[tuple[str, str], list[Trial]] = {}
    for trial in trials:
        groups.setdefault((trial.backbone, trial.variant), []).append(trial)
    for (backbone, variant), members in sorted(groups.items()):
        members.sort(key=lambda t: t.number)
        assert [t.number for t in members] == list(range(len(members))), "study trial numbers are dense"
        write_study(
            hpo_dir,
            backbone,
            variant,
            [
                {
                    "value": t.metric,
                    "trial_key": t.trial_key,
                    "run_id": (run_ids or {}).get(t.trial_key),
                    "params": t.hyperparameters,
                }
                for t in members
            ],
        )


def write_folder(
    hpo_dir: Path,
    trial: Trial,
    *,
    run_id: str | None = None,
    meta: dict[str, Any] | None = None,
    metrics_text: str | None = None,
    meta_text: str | None = None,
    write_meta: bool = True,
    write_metrics: bool = True,
    drop_meta: Sequence[str] = (),
) -> Path:
    """A trial folder with ``trial_meta.json`` and ``metrics.json`` per the contract (raw texts override)."""
    folder = contract.trial_dir(hpo_dir, trial.backbone, trial.study_key, trial.trial_key)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "backbone": trial.backbone,
        "variant": trial.variant,
        "study_name": contract.study_name(trial.backbone, trial.variant),
        "study_key_hash": trial.study_key,
        "trial_key_hash": trial.trial_key,
        "trial_number": trial.number,
        "mlflow_run_id": run_id,
        "hyperparameters": trial.hyperparameters,
        "data_fingerprint": DATA_FP,
        "objective": {"metric": METRIC, "direction": "maximize"},
        **(meta or {}),
    }
    for name in drop_meta:
        payload.pop(name)
    if write_meta:
        (folder / contract.TRIAL_META_FILE).write_text(
            meta_text if meta_text is not None else json.dumps(payload), encoding="utf-8"
        )
    if write_metrics:
        text = metrics_text if metrics_text is not None else json.dumps({METRIC: trial.metric, "train_loss": 1.0})
        (folder / contract.METRICS_FILE).write_text(text, encoding="utf-8")
    return folder


def retrieve(
    backbones: Sequence[str],
    hpo_dir: Path,
    *,
    client: MlflowClient | None = None,
    experiments: dict[str, dict[str, str]] | None = None,
    scope: str = "overall",
    direction: str = "maximize",
    **selection: Any,
) -> dict[str, Any]:
    return retrieve_best_trials(
        backbone_values=list(backbones),
        hpo_experiments=experiments or {},
        benchmark_experiment=None,
        selection_config={"hpo_output_dir": str(hpo_dir), **selection},
        hpo_config={"objective": {"metric": METRIC, "direction": direction}},
        data_config=DATA_CONFIG,
        root_dir=hpo_dir,
        environment="test",
        selection_scope=scope,
        mlflow_client=client,
    )


def picks(info: dict[str, Any]) -> dict[str, str | None]:
    return {source: (c["pick"] or {}).get("trial_id") for source, c in info["candidates"].items()}


def warnings_from(caplog: pytest.LogCaptureFixture, logger: str = RETRIEVAL_LOGGER) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]
