"""Dagster resources: the pipeline settings and an MLflow client factory.

Each asset asks :class:`MlflowResource` for its own ``MlflowClient`` bound to an explicit tracking URI:
MLflow's fluent API keeps the active run and URI in process-global state, which Dagster's multiprocess
and in-process executors would share between steps.
"""

from __future__ import annotations

import os

import dagster as dg
from mlflow.tracking import MlflowClient

from benchmark_pipeline.config import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, PipelineConfig, load_config
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


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources for this deployment: the tracking URI comes from ``$MLFLOW_TRACKING_URI`` when set (shown
    as an environment variable in the UI, never baked in), else from the config file."""
    settings = PipelineSettings(config_path=os.environ.get("BENCHMARK_PIPELINE_CONFIG") or None)
    tracking_uri: str | dg.EnvVar
    mlflow = settings.load().mlflow
    tracking_uri = dg.EnvVar("MLFLOW_TRACKING_URI") if os.environ.get("MLFLOW_TRACKING_URI") else mlflow.tracking_uri
    return {"settings": settings, "mlflow": MlflowResource(tracking_uri=tracking_uri, timeout_s=mlflow.timeout_s, max_retries=mlflow.max_retries)}
