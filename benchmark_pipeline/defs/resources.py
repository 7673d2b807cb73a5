"""Dagster resources: the pipeline settings, an MLflow client factory and the JSON IO manager.

Each asset asks :class:`MlflowResource` for its own ``MlflowClient`` bound to an explicit tracking URI:
MLflow's fluent API keeps the active run and URI in process-global state, which Dagster's multiprocess
and in-process executors would share between steps.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    IO_BASE_PATH_ENV,
    PipelineConfig,
    load_config,
)
from benchmark_pipeline.defs.io_managers import JsonIOManager, default_io_base_path
from benchmark_pipeline.tracking import make_client


class PipelineSettings(dg.ConfigurableResource):
    """Where the pipeline's YAML config lives (``None``: ``$BENCHMARK_PIPELINE_CONFIG`` or the demo config).

    Environment overrides documented in :mod:`benchmark_pipeline.config` apply on top.
    """

    config_path: str | None = None

    def load(self) -> PipelineConfig:
        return load_config(self.config_path)


class MlflowResource(dg.ConfigurableResource):
    """The MLflow tracking server (or local store) the pipeline reads HPO runs from and logs benchmarks to."""

    tracking_uri: str
    #: bounds of every MLflow call (``mlflow.timeout_s`` / ``mlflow.max_retries`` of the config)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES

    def client(self) -> MlflowClient:
        return make_client(self.tracking_uri, self.timeout_s, self.max_retries)


def default_resources() -> dict[str, Any]:
    """Resources for this deployment: the tracking URI comes from ``$MLFLOW_TRACKING_URI`` when set (shown
    as an environment variable in the UI, never baked in), else from the config file; asset outputs go, as
    JSON, to ``$BENCHMARK_PIPELINE_IO_BASE_PATH`` when set, else to a local folder; single-run backfills'
    outputs included (:mod:`benchmark_pipeline.defs.io_managers`)."""
    settings = PipelineSettings(config_path=os.environ.get("BENCHMARK_PIPELINE_CONFIG") or None)
    config = settings.load()
    tracking_uri: str | dg.EnvVar
    tracking_uri = (
        dg.EnvVar("MLFLOW_TRACKING_URI") if os.environ.get("MLFLOW_TRACKING_URI") else config.mlflow.tracking_uri
    )
    base_path: str | dg.EnvVar = (
        dg.EnvVar(IO_BASE_PATH_ENV) if os.environ.get(IO_BASE_PATH_ENV) else default_io_base_path(config)
    )
    mlflow = MlflowResource(
        tracking_uri=tracking_uri, timeout_s=config.mlflow.timeout_s, max_retries=config.mlflow.max_retries
    )
    return {"settings": settings, "mlflow": mlflow, "io_manager": JsonIOManager(base_path=base_path)}
