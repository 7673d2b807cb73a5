"""The old entry point, kept for backward compatibility. Use :func:`retrieve_best_trials`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient

from benchmark_pipeline.selection.trial_retrieval import retrieve_best_trials


def find_best_trials_for_backbones(
    backbone_values: list[str],
    hpo_studies: dict[str, optuna.Study] | None,
    hpo_config: dict[str, Any],
    data_config: dict[str, Any],
    root_dir: Path,
    environment: str,
    hpo_experiments: dict[str, dict[str, str]] | None = None,
    mlflow_client: MlflowClient | None = None,
) -> dict[str, dict[str, Any]]:
    """Deprecated: delegates to ``retrieve_best_trials(selection_scope="overall")``.

    Unlike the old implementation, MLflow is consulted first when ``hpo_experiments`` and a client (or
    ``$MLFLOW_TRACKING_URI``) are available; ``hpo_studies`` are read as the study source.
    """
    warnings.warn(
        "find_best_trials_for_backbones() is deprecated; call retrieve_best_trials() and, before "
        "benchmarking, filter_missing_benchmarks()",
        DeprecationWarning,
        stacklevel=2,
    )
    return retrieve_best_trials(
        backbone_values=backbone_values,
        hpo_experiments=hpo_experiments or {},
        benchmark_experiment=None,
        selection_config={"optuna_studies": hpo_studies or {}},
        hpo_config=hpo_config,
        data_config=data_config,
        root_dir=root_dir,
        environment=environment,
        selection_scope="overall",
        mlflow_client=mlflow_client,
    )
